// probe: a tiny static client/server for the real-node smoke tests. Busybox's wget segfaults on
// Debian and has no TLS, so in-pod HTTP(S) and DNS checks use this instead.
//
//	probe serve PORT          HTTP server answering "hello from $HOSTNAME"
//	probe get URL [--sa]      GET URL (with the pod's ServiceAccount token and CA for --sa);
//	                          prints the status line and body, exits 1 unless 2xx
//	probe resolve NAME        prints the addresses NAME resolves to, exits 1 if none
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: probe serve PORT | get URL [--sa] | resolve NAME")
	}
	switch os.Args[1] {
	case "serve":
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", host)
		})
		fail("%v", http.ListenAndServe(":"+os.Args[2], nil))
	case "get":
		client := &http.Client{Timeout: 10 * time.Second}
		req, err := http.NewRequest("GET", os.Args[2], nil)
		if err != nil {
			fail("bad url: %v", err)
		}
		if len(os.Args) > 3 && os.Args[3] == "--sa" {
			token, err := os.ReadFile(saDir + "/token")
			if err != nil {
				fail("no service account token: %v", err)
			}
			ca, err := os.ReadFile(saDir + "/ca.crt")
			if err != nil {
				fail("no service account CA: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				fail("ca.crt holds no certificate")
			}
			client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		}
		resp, err := client.Do(req)
		if err != nil {
			fail("GET %s: %v", os.Args[2], err)
		}
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("%s\n%s", resp.Status, body)
		if resp.StatusCode/100 != 2 {
			os.Exit(1)
		}
	case "resolve":
		addrs, err := net.LookupHost(os.Args[2])
		if err != nil || len(addrs) == 0 {
			fail("resolve %s: %v", os.Args[2], err)
		}
		fmt.Println(strings.Join(addrs, " "))
	default:
		fail("unknown command %q", os.Args[1])
	}
}
