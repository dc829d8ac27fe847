// Test client for llmtap's Go crypto/tls capture: sends recorded requests (cassettes) over
// HTTPS, many at once, with net/http from the standard library only.
//
// Usage: go-client [-concurrency N] [-repeat N] [-wait D] CASSETTE.json[=IP:PORT]...
//
// Each cassette's request (method, URL, headers, body) is sent -repeat times. With =IP:PORT the
// connection goes to that address while the URL, hence Host and SNI, stay as recorded. Server
// certificates are checked against the system roots, which Go reads from SSL_CERT_FILE when it
// is set. HTTP/2 is negotiated by ALPN as net/http does by default (GODEBUG=http2client=0
// turns it off). -wait pauses before the first call: a test server on loopback answers before
// a brand-new binary is hooked (real clients spend that time on start-up and DNS). Prints one line per call, in call order: "<index> <status> <body bytes>
// <protocol> [replay response id]", and exits 1 if any call failed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type cassette struct {
	Request struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	} `json:"request"`
}

// Headers the transport sets itself (framing, compression) or that must not be replayed.
var skipped = map[string]bool{
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true,
	"accept-encoding": true, "authorization": true,
}

type job struct {
	cassette cassette
	client   *http.Client
}

func main() {
	concurrency := flag.Int("concurrency", 1, "calls in flight at once")
	repeat := flag.Int("repeat", 1, "times each cassette is sent")
	wait := flag.Duration("wait", 0, "pause before the first call")
	flag.Parse()
	if flag.NArg() == 0 {
		fail("usage: go-client [-concurrency N] [-repeat N] CASSETTE.json[=IP:PORT]...")
	}

	// One client per target address, so calls to one server share its connections.
	clients := map[string]*http.Client{}
	var jobs []job
	for _, arg := range flag.Args() {
		path, addr := arg, ""
		if i := strings.LastIndex(arg, "="); i >= 0 {
			path, addr = arg[:i], arg[i+1:]
		}
		data, err := os.ReadFile(path)
		if err != nil {
			fail("reading %s: %v", path, err)
		}
		var c cassette
		if err := json.Unmarshal(data, &c); err != nil {
			fail("parsing %s: %v", path, err)
		}
		client, ok := clients[addr]
		if !ok {
			client = newClient(addr, *concurrency)
			clients[addr] = client
		}
		for i := 0; i < *repeat; i++ {
			jobs = append(jobs, job{c, client})
		}
	}

	time.Sleep(*wait)

	results := make([]string, len(jobs))
	failed := false
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, *concurrency)
	for i, j := range jobs {
		wg.Add(1)
		slots <- struct{}{}
		go func(i int, j job) {
			defer wg.Done()
			defer func() { <-slots }()
			line, err := call(j.client, j.cassette)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = true
				line = "error: " + err.Error()
			}
			results[i] = fmt.Sprintf("%d %s", i, line)
		}(i, j)
	}
	wg.Wait()
	for _, line := range results {
		fmt.Println(line)
	}
	if failed {
		os.Exit(1)
	}
}

func newClient(addr string, concurrency int) *http.Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = concurrency
	transport.DisableCompression = true
	transport.Proxy = nil
	if addr != "" {
		transport.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}
	}
	return &http.Client{Transport: transport, Timeout: 60 * time.Second}
}

func call(client *http.Client, c cassette) (string, error) {
	target := strings.SplitN(c.Request.URL, "#", 2)[0]
	req, err := http.NewRequest(c.Request.Method, target, bytes.NewBufferString(c.Request.Body))
	if err != nil {
		return "", err
	}
	for name, value := range c.Request.Headers {
		if !skipped[strings.ToLower(name)] {
			req.Header.Set(name, value)
		}
	}
	// The recording's credential is redacted; send the test's planted key in its place, so
	// the test can check that it never shows in what llmtap records.
	if key := os.Getenv("LLMTAP_TEST_API_KEY"); key != "" {
		for name := range c.Request.Headers {
			if strings.EqualFold(name, "authorization") {
				req.Header.Set("Authorization", "Bearer "+key)
			}
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	line := fmt.Sprintf("%d %d %s", resp.StatusCode, len(body), resp.Proto)
	// The test replay server names the response id it assigned to this call.
	if id := resp.Header.Get("X-Llmtap-Replay-Response-Id"); id != "" {
		line += " " + id
	}
	return line, nil
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-client: "+format+"\n", args...)
	os.Exit(2)
}
