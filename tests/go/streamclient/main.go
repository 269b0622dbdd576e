// streamclient speaks the Kubernetes remotecommand protocol (exec / attach) over SPDY
// with moby/spdystream, the library client-go uses, the way client-go does: an HTTP
// upgrade offering the channel.k8s.io versions, then the error, stdin, stdout, stderr
// and resize streams, each created only after the previous one was answered.
//
// It prints one JSON object: the negotiated protocol, what came on stdout, stderr and
// the error stream, or the HTTP status when the upgrade was refused.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

type result struct {
	Status   int    `json:"status"`
	Protocol string `json:"protocol"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Error    string `json:"error"`
	// Byte counts, for outputs too large to print.
	StdoutLen int    `json:"stdout_len"`
	Failure   string `json:"failure,omitempty"`
}

func main() {
	target := flag.String("url", "", "the URL the Exec or Attach RPC returned")
	protocols := flag.String("protocols", "v5.channel.k8s.io,v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io", "offered, in order")
	stdin := flag.Bool("stdin", false, "open a stdin stream")
	stdout := flag.Bool("stdout", true, "open a stdout stream")
	stderr := flag.Bool("stderr", false, "open a stderr stream")
	tty := flag.Bool("tty", false, "open a resize stream")
	input := flag.String("input", "", "what to write on stdin")
	closeAfter := flag.Duration("close-after", 0, "wait this long after the input before closing stdin")
	width := flag.Int("width", 0, "terminal width to send on the resize stream")
	height := flag.Int("height", 0, "terminal height to send on the resize stream")
	hangup := flag.Duration("hangup", 0, "drop the connection after this long instead of waiting for the end")
	inputSize := flag.Int("input-size", 0, "write this many bytes of 'x' on stdin (after -input)")
	inputFile := flag.String("input-file", "", "write this file's bytes on stdin (after -input), e.g. a tar archive")
	quiet := flag.Bool("quiet", false, "report stdout's length only")
	flag.Parse()

	out := result{}
	finish := func() {
		json.NewEncoder(os.Stdout).Encode(out)
		os.Exit(0)
	}
	u, err := url.Parse(*target)
	if err != nil {
		out.Failure = err.Error()
		finish()
	}
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		out.Failure = err.Error()
		finish()
	}
	var request strings.Builder
	fmt.Fprintf(&request, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n", u.RequestURI(), u.Host)
	for _, p := range strings.Split(*protocols, ",") {
		fmt.Fprintf(&request, "X-Stream-Protocol-Version: %s\r\n", p)
	}
	request.WriteString("Content-Length: 0\r\n\r\n")
	if _, err := conn.Write([]byte(request.String())); err != nil {
		out.Failure = err.Error()
		finish()
	}
	reader := bufio.NewReader(conn)
	response, err := http.ReadResponse(reader, nil)
	if err != nil {
		out.Failure = err.Error()
		finish()
	}
	out.Status = response.StatusCode
	if response.StatusCode != http.StatusSwitchingProtocols {
		finish()
	}
	out.Protocol = response.Header.Get("X-Stream-Protocol-Version")
	if reader.Buffered() > 0 {
		out.Failure = "the server sent bytes before the client opened any stream"
		finish()
	}
	session, err := spdystream.NewConnection(conn, false)
	if err != nil {
		out.Failure = err.Error()
		finish()
	}
	go session.Serve(spdystream.NoOpStreamHandler)

	create := func(kind string) *spdystream.Stream {
		stream, err := session.CreateStream(http.Header{"streamType": {kind}}, nil, false)
		if err == nil {
			err = stream.WaitTimeout(30 * time.Second)
		}
		if err != nil {
			out.Failure = fmt.Sprintf("creating the %s stream: %v", kind, err)
			finish()
		}
		return stream
	}
	errorStream := create("error")
	var in, outStream, errStream, resize *spdystream.Stream
	if *stdin {
		in = create("stdin")
	}
	if *stdout {
		outStream = create("stdout")
	}
	if *stderr && !*tty {
		errStream = create("stderr")
	}
	if *tty && !strings.HasPrefix(out.Protocol, "v2.") && out.Protocol != "channel.k8s.io" {
		resize = create("resize")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stdoutSeen, stderrSeen bytes.Buffer
	// What came so far, under mu.
	seen := func() {
		out.Stdout = stdoutSeen.String()
		out.Stderr = stderrSeen.String()
		out.StdoutLen = len(out.Stdout)
	}
	collect := func(stream *spdystream.Stream, into *bytes.Buffer) {
		if stream == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32*1024)
			for {
				n, err := stream.Read(buf)
				if n > 0 {
					mu.Lock()
					into.Write(buf[:n])
					mu.Unlock()
				}
				if err != nil {
					return
				}
			}
		}()
	}
	collect(outStream, &stdoutSeen)
	collect(errStream, &stderrSeen)
	if resize != nil && *width > 0 {
		json.NewEncoder(resize).Encode(map[string]int{"Width": *width, "Height": *height})
	}
	if in != nil {
		if *input != "" {
			in.Write([]byte(*input))
		}
		if *inputFile != "" {
			data, err := os.ReadFile(*inputFile)
			if err != nil {
				out.Failure = fmt.Sprintf("reading %s: %v", *inputFile, err)
				finish()
			}
			in.Write(data)
		}
		chunk := []byte(strings.Repeat("x", 64*1024))
		for left := *inputSize; left > 0; left -= len(chunk) {
			if left < len(chunk) {
				chunk = chunk[:left]
			}
			if _, err := in.Write(chunk); err != nil {
				out.Failure = fmt.Sprintf("writing stdin: %v", err)
				break
			}
		}
		if *hangup == 0 {
			time.Sleep(*closeAfter)
			in.Close()
		}
	}
	if *hangup > 0 {
		// Drops the connection with stdin still open, reporting what came until then.
		time.Sleep(*hangup)
		conn.Close()
		mu.Lock()
		seen()
		finish()
	}
	wg.Wait()
	seen()
	data, _ := io.ReadAll(errorStream)
	out.Error = string(data)
	if *quiet {
		out.Stdout = ""
	}
	session.Close()
	finish()
}
