// criwatch subscribes to GetContainerEvents with grpc-go, the gRPC implementation the
// kubelet uses for its evented PLEG, and prints one line per event as it comes, as
// `crictl events` would show them:
//
//	<TYPE> <container_id> pod=<pod_id>:<POD_STATE> containers=<id>:<STATE>:<exit_code>,...
//
// ids are cut to 12 characters. It prints `ready` once the stream is open, and ends after
// -count events (or with the stream's error code on stderr, exit status 3).
//
// Built by the integration tests in GOPATH mode against Debian's golang-google-grpc-dev;
// it needs no generated code: messages are read as raw protobuf bytes.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec passes protobuf bytes through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// field is one field of a message: its bytes (length-delimited) or its number (varint).
type field struct {
	bytes  []byte
	varint uint64
}

// fields returns every field of a message by number, repeated ones in order.
func fields(msg []byte) (map[protowire.Number][]field, error) {
	out := map[protowire.Number][]field{}
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		msg = msg[n:]
		switch typ {
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			out[num] = append(out[num], field{bytes: v})
			msg = msg[m:]
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(msg)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			out[num] = append(out[num], field{varint: v})
			msg = msg[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, msg)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			msg = msg[m:]
		}
	}
	return out, nil
}

func first(f map[protowire.Number][]field, n protowire.Number) field {
	if len(f[n]) == 0 {
		return field{}
	}
	return f[n][0]
}

func short(id []byte) string {
	if len(id) > 12 {
		return string(id[:12])
	}
	return string(id)
}

var eventTypes = []string{"CREATED", "STARTED", "STOPPED", "DELETED"}
var podStates = []string{"READY", "NOTREADY"}
var containerStates = []string{"CREATED", "RUNNING", "EXITED", "UNKNOWN"}

func name(names []string, v uint64) string {
	if v < uint64(len(names)) {
		return names[v]
	}
	return fmt.Sprint(v)
}

// line renders a ContainerEventResponse.
func line(event []byte) (string, error) {
	f, err := fields(event)
	if err != nil {
		return "", err
	}
	pod := "none"
	if raw := f[4]; len(raw) > 0 {
		p, err := fields(raw[0].bytes)
		if err != nil {
			return "", err
		}
		pod = short(first(p, 1).bytes) + ":" + name(podStates, first(p, 3).varint)
	}
	var containers []string
	for _, raw := range f[5] {
		c, err := fields(raw.bytes)
		if err != nil {
			return "", err
		}
		exit := int32(first(c, 7).varint)
		containers = append(containers, fmt.Sprintf("%s:%s:%d", short(first(c, 1).bytes), name(containerStates, first(c, 3).varint), exit))
	}
	return fmt.Sprintf("%s %s pod=%s containers=%s", name(eventTypes, first(f, 2).varint), short(first(f, 1).bytes), pod, strings.Join(containers, ",")), nil
}

func main() {
	socket := flag.String("socket", "", "the CRI unix socket")
	count := flag.Int("count", 1, "how many events to print before ending")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait for them")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "criwatch: -socket is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.DialContext(ctx, *socket,
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithAuthority("localhost"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "criwatch: dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	desc := &grpc.StreamDesc{StreamName: "GetContainerEvents", ServerStreams: true}
	stream, err := conn.NewStream(ctx, desc, "/runtime.v1.RuntimeService/GetContainerEvents")
	if err != nil {
		fmt.Fprintln(os.Stderr, "criwatch: stream:", err)
		os.Exit(1)
	}
	request := []byte{}
	if err := stream.SendMsg(&request); err != nil {
		fmt.Fprintln(os.Stderr, "criwatch: send:", err)
		os.Exit(1)
	}
	if err := stream.CloseSend(); err != nil {
		fmt.Fprintln(os.Stderr, "criwatch: close send:", err)
		os.Exit(1)
	}
	// The headers come once the server has taken the call: it is subscribed.
	if _, err := stream.Header(); err != nil {
		fmt.Fprintln(os.Stderr, "criwatch: headers:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for i := 0; i < *count; i++ {
		var event []byte
		if err := stream.RecvMsg(&event); err != nil {
			fmt.Fprintf(os.Stderr, "criwatch: code=%s: %v\n", status.Code(err), err)
			os.Exit(3)
		}
		text, err := line(event)
		if err != nil {
			fmt.Fprintln(os.Stderr, "criwatch: bad event:", err)
			os.Exit(1)
		}
		fmt.Println(text)
	}
}
