// Command fwdclient fetches one URL with Go's default HTTP client, which
// takes its proxy from HTTPS_PROXY, HTTP_PROXY and NO_PROXY and its trusted
// roots from SSL_CERT_FILE: a Go app run under sidekey's forward proxy
// with nothing but its environment changed. It prints the body and exits
// 1 unless the status is 200.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fwdclient URL")
		os.Exit(2)
	}
	resp, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "status %s\n", resp.Status)
		os.Exit(1)
	}
}
