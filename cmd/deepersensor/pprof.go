//go:build pprof

package main

import (
	"log"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

// With the pprof build tag, which `go run ./cmd/bench-e2e -cpuprofile FILE` builds with, the server also
// serves net/http/pprof on BENCH_PPROF_ADDR, so that it can be profiled under load. Builds without the tag,
// releases among them, never include it.
func init() {
	addr := os.Getenv("BENCH_PPROF_ADDR")
	if addr == "" {
		return
	}
	go func() { log.Println("pprof:", http.ListenAndServe(addr, nil)) }()
}
