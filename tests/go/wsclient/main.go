// wsclient speaks the Kubernetes remotecommand protocol over WebSocket with
// gorilla/websocket (the library client-go's WebSocket executor uses): channel-prefixed
// messages, binary or base64, the v5 close signal for stdin, a resize message, and the
// server's Close frame as the end. It prints what arrived on each channel as JSON.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

type result struct {
	Status   int    `json:"status"`
	Protocol string `json:"protocol"`
	First    string `json:"first"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Error    string `json:"error"`
	Closed   int    `json:"closed"`
	Failure  string `json:"failure,omitempty"`
}

func main() {
	target := flag.String("url", "", "the URL the Exec or Attach RPC returned (http://)")
	protocols := flag.String("protocols", "v5.channel.k8s.io", "offered subprotocols, in order")
	input := flag.String("input", "", "what to write on stdin")
	closeStdin := flag.Bool("close-stdin", false, "send the v5 close signal for stdin after the input")
	width := flag.Int("width", 0, "terminal width to send on the resize channel")
	height := flag.Int("height", 0, "terminal height")
	flag.Parse()

	out := result{}
	finish := func() {
		json.NewEncoder(os.Stdout).Encode(out)
		os.Exit(0)
	}
	dialer := websocket.Dialer{
		Subprotocols:     strings.Split(*protocols, ","),
		HandshakeTimeout: 10 * time.Second,
	}
	url := "ws" + strings.TrimPrefix(*target, "http")
	conn, response, err := dialer.Dial(url, http.Header{})
	if response != nil {
		out.Status = response.StatusCode
	}
	if err != nil {
		out.Failure = err.Error()
		finish()
	}
	out.Protocol = conn.Subprotocol()
	b64 := strings.Contains(out.Protocol, "base64")
	send := func(channel byte, data []byte) {
		if b64 {
			conn.WriteMessage(websocket.TextMessage, []byte(string('0'+channel)+base64.StdEncoding.EncodeToString(data)))
		} else {
			conn.WriteMessage(websocket.BinaryMessage, append([]byte{channel}, data...))
		}
	}
	go func() {
		if *width > 0 {
			size, _ := json.Marshal(map[string]int{"Width": *width, "Height": *height})
			send(4, size)
		}
		if *input != "" {
			send(0, []byte(*input))
		}
		if *closeStdin {
			conn.WriteMessage(websocket.BinaryMessage, []byte{255, 0})
		}
	}()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	first := true
	for {
		kind, message, err := conn.ReadMessage()
		if err != nil {
			if closeErr, ok := err.(*websocket.CloseError); ok {
				out.Closed = closeErr.Code
			} else {
				out.Failure = err.Error()
			}
			break
		}
		if b64 && kind == websocket.TextMessage && len(message) > 0 {
			data, err := base64.StdEncoding.DecodeString(string(message[1:]))
			if err != nil {
				out.Failure = fmt.Sprintf("bad base64: %v", err)
				break
			}
			message = append([]byte{message[0] - '0'}, data...)
		}
		if first {
			out.First = fmt.Sprintf("%x", message)
			first = false
		}
		if len(message) == 0 {
			continue
		}
		switch message[0] {
		case 1:
			out.Stdout += string(message[1:])
		case 2:
			out.Stderr += string(message[1:])
		case 3:
			out.Error += string(message[1:])
		}
	}
	finish()
}
