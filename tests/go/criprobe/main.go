// criprobe calls CRI RPCs on a unix socket with grpc-go, the gRPC implementation the
// kubelet and crictl use, so berth's tests exercise a client berth did not write.
//
// grpc-go 1.33 (Debian 12) sends the dial target, here the socket path, as the HTTP/2
// :authority, as old kubelets did; -authority localhost sends what kubelet 1.26+ sends.
//
// Built by the integration tests in GOPATH mode against Debian's golang-google-grpc-dev;
// it needs no generated code: messages are passed as raw protobuf bytes.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
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

// stringFields returns the length-delimited fields of a message by field number.
func stringFields(msg []byte) (map[protowire.Number]string, error) {
	fields := map[protowire.Number]string{}
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		msg = msg[n:]
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			fields[num] = string(v)
			msg = msg[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, msg)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		msg = msg[m:]
	}
	return fields, nil
}

func main() {
	socket := flag.String("socket", "", "the CRI unix socket")
	authority := flag.String("authority", "", "the :authority to send (default: grpc-go's choice, the socket path)")
	calls := flag.Int("calls", 1, "how many Version calls to make on one connection")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "criprobe: -socket is required")
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opts := []grpc.DialOption{
		grpc.WithInsecure(),
		grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
	}
	if *authority != "" {
		opts = append(opts, grpc.WithAuthority(*authority))
	}
	conn, err := grpc.DialContext(ctx, *socket, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "criprobe: dial:", err)
		os.Exit(1)
	}
	defer conn.Close()

	var name, apiVersion string
	for i := 0; i < *calls; i++ {
		// VersionRequest{version: "v1"}
		req := protowire.AppendTag(nil, 1, protowire.BytesType)
		req = protowire.AppendString(req, "v1")
		var resp []byte
		if err := conn.Invoke(ctx, "/runtime.v1.RuntimeService/Version", &req, &resp); err != nil {
			fmt.Fprintf(os.Stderr, "criprobe: Version call %d: %v\n", i+1, err)
			os.Exit(1)
		}
		fields, err := stringFields(resp)
		if err != nil {
			fmt.Fprintln(os.Stderr, "criprobe: bad VersionResponse:", err)
			os.Exit(1)
		}
		name, apiVersion = fields[2], fields[4]
	}
	fmt.Printf("runtime_name=%s runtime_api_version=%s calls=%d target=%s\n", name, apiVersion, *calls, conn.Target())
}
