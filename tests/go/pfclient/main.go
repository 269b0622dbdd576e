// pfclient speaks the Kubernetes port-forward protocol (portforward.k8s.io) over SPDY
// with moby/spdystream, as client-go does: per connection, an error stream (half-closed
// at once) and a data stream with the same port and requestID headers. It opens several
// connections at once, sends each a request, and prints what came back on every data
// and error stream as JSON.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

type reply struct {
	Data  string `json:"data"`
	Error string `json:"error"`
}

type result struct {
	Status   int     `json:"status"`
	Protocol string  `json:"protocol"`
	Replies  []reply `json:"replies"`
	Failure  string  `json:"failure,omitempty"`
}

func main() {
	target := flag.String("url", "", "the URL the PortForward RPC returned")
	port := flag.Int("port", 0, "the pod's port")
	count := flag.Int("connections", 1, "how many connections at once")
	send := flag.String("send", "GET / HTTP/1.0\r\n\r\n", "what each connection sends")
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
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n", u.RequestURI(), u.Host)
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
	session, err := spdystream.NewConnection(conn, false)
	if err != nil {
		out.Failure = err.Error()
		finish()
	}
	go session.Serve(spdystream.NoOpStreamHandler)

	out.Replies = make([]reply, *count)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < *count; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			headers := http.Header{}
			headers.Set("port", strconv.Itoa(*port))
			headers.Set("requestID", strconv.Itoa(i))
			headers.Set("streamType", "error")
			errorStream, err := session.CreateStream(headers, nil, false)
			if err == nil {
				err = errorStream.WaitTimeout(30 * time.Second)
			}
			if err != nil {
				mu.Lock()
				out.Failure = fmt.Sprintf("error stream %d: %v", i, err)
				mu.Unlock()
				return
			}
			errorStream.Close()
			headers.Set("streamType", "data")
			dataStream, err := session.CreateStream(headers, nil, false)
			if err == nil {
				err = dataStream.WaitTimeout(30 * time.Second)
			}
			if err != nil {
				mu.Lock()
				out.Failure = fmt.Sprintf("data stream %d: %v", i, err)
				mu.Unlock()
				return
			}
			dataStream.Write([]byte(*send))
			data, _ := io.ReadAll(dataStream)
			errors, _ := io.ReadAll(errorStream)
			mu.Lock()
			out.Replies[i] = reply{Data: string(data), Error: string(errors)}
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	session.Close()
	finish()
}
