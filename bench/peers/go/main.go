// bench/peers/go/main.go: the Go peer, net/http/fcgi from the standard
// library. It listens on 127.0.0.1:PORT (argv[1], 0 = any free port), prints
// "ready, listening on 127.0.0.1:PORT" on stderr once bound, and serves the
// benchmark routes: /hello, /json (1 KB object with encoding/json), /upload
// (reads the body, answers its length) and /sleep?ms=N (long-poll).
// net/http/fcgi runs every request in its own goroutine, so it multiplexes
// requests on one connection (it does not announce FCGI_MPXS_CONNS).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"os"
	"strconv"
	"time"
)

type item struct {
	ID      int     `json:"id"`
	Name    string  `json:"name"`
	Price   float64 `json:"price"`
	Qty     int     `json:"qty"`
	InStock bool    `json:"in_stock"`
}

type doc struct {
	ID     int      `json:"id"`
	Name   string   `json:"name"`
	Active bool     `json:"active"`
	Score  float64  `json:"score"`
	Tags   []string `json:"tags"`
	Items  []item   `json:"items"`
}

func newDoc() *doc {
	d := &doc{ID: 12345, Name: "afcgi benchmark", Active: true, Score: 0.5,
		Tags: []string{"alpha", "beta", "gamma", "delta"}}
	for i := 1; i <= 16; i++ {
		d.Items = append(d.Items, item{ID: i, Name: fmt.Sprintf("item-%02d", i),
			Price: float64(i) * 1.25, Qty: i * 3, InStock: i%2 == 0})
	}
	return d
}

func main() {
	port := "9000"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-fcgi:", err)
		os.Exit(2)
	}
	d := newDoc()
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Hello, world!\n")
	})
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(d)
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(b, '\n'))
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "length %d\n", n)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil {
			ms = 10000
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "slept %d\n", ms)
	})
	fmt.Fprintf(os.Stderr, "ready, listening on %s\n", ln.Addr())
	if err := fcgi.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "go-fcgi:", err)
		os.Exit(1)
	}
}
