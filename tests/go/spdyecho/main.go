// spdyecho reads SPDY/3.1 frames on stdin with the framer of moby/spdystream (the library
// the Kubernetes clients use) and writes each one back on stdout with the same framer:
// berth's encoder is checked by Go's decoder, and berth's decoder by Go's encoder.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/moby/spdystream/spdy"
)

func main() {
	framer, err := spdy.NewFramer(os.Stdout, os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "framer:", err)
		os.Exit(2)
	}
	for {
		frame, err := framer.ReadFrame()
		if err == io.EOF {
			return
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			os.Exit(1)
		}
		if err := framer.WriteFrame(frame); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			os.Exit(1)
		}
	}
}
