// Command echo is the test service of the Cube container orchestrator.
//
// It echoes JSON messages on POST /, reports health on GET /health and can be
// told to misbehave (fail health checks, crash, exit at start-up) so that the
// orchestrator's failure handling can be exercised end to end. It is meant to
// run as PID 1 in a FROM scratch image.
//
// Endpoints:
//
//	POST /            {"Msg":"..."} -> 200 with the same JSON; 400 if malformed
//	GET  /health      200 "OK" (500 once ECHO_UNHEALTHY_AFTER has elapsed)
//	GET  /healthfail  500 "Internal server error"
//	POST /crash       200 "crashing", then the process exits with code 1
//
// Environment:
//
//	ECHO_ADDR             listen address (default ":7777")
//	ECHO_EXIT_AT_START=N  exit with code N before listening
//	ECHO_UNHEALTHY_AFTER  Go duration after which /health answers 500
//
// Run as "/echo -health" it is its own health-check command instead (the
// image has no shell and no HTTP client; Docker's exec-form HEALTHCHECK,
// as a Swarm service's health check, can run it): it GETs /health on the
// port of ECHO_ADDR at 127.0.0.1 and exits 0 on 200, 1 otherwise.
//
// Invalid settings make the process exit with code 2. SIGTERM and SIGINT shut
// the server down gracefully and the process exits with code 0.
package main

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// shutdownTimeout bounds how long in-flight requests may take to finish after
// a stop signal. It is below Docker's default 10 s stop grace period so that
// a `docker stop` never escalates to SIGKILL.
const shutdownTimeout = 5 * time.Second

// crashDelay is how long the process lingers after POST /crash, giving the
// already-flushed response time to reach the client before exiting.
const crashDelay = 50 * time.Millisecond

func main() {
	log.SetOutput(os.Stderr)
	log.SetPrefix("echo: ")
	log.SetFlags(log.LstdFlags | log.LUTC)
	if len(os.Args) == 2 && os.Args[1] == "-health" {
		os.Exit(checkHealth(os.Getenv, &http.Client{Timeout: healthCheckTimeout}))
	}
	os.Exit(run())
}

// run starts the service and blocks until it stops, returning the process
// exit code. It is split from main so that deferred calls run before os.Exit.
func run() int {
	start := time.Now()
	// As PID 1 the kernel gives no default action to SIGTERM/SIGINT, so
	// without an explicit handler `docker stop` would wait for its grace
	// period and then SIGKILL the container. It is installed first: a
	// signal before it makes the Go runtime exit with code 2.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	if code, ok, err := parseExitAtStart(os.Getenv); err != nil {
		log.Print(err)
		return 2
	} else if ok {
		log.Printf("%s set: exiting with code %d before start-up", envExitAtStart, code)
		return code
	}

	cfg, err := parseConfig(os.Getenv)
	if err != nil {
		log.Print(err)
		return 2
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		log.Printf("listen: %v", err)
		return 1
	}

	srv := &http.Server{
		Handler:           newHandler(start, cfg.unhealthyAfter, crash),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if cfg.unhealthyAfter > 0 {
		log.Printf("listening on %s (unhealthy after %s)", ln.Addr(), cfg.unhealthyAfter)
	} else {
		log.Printf("listening on %s", ln.Addr())
	}

	select {
	case err := <-serveErr:
		// Serve only returns early on a listener failure.
		log.Printf("serve: %v", err)
		return 1
	case <-ctx.Done():
	}
	// Restore default signal handling so a second signal kills the process
	// at once should the graceful shutdown hang.
	stop()
	log.Print("signal received, shutting down")

	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("shutdown: %v", err)
		return 1
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Printf("serve: %v", err)
		return 1
	}
	log.Print("stopped")
	return 0
}

// healthCheckTimeout bounds the -health probe; Docker's own timeout of
// the command is the health check's.
const healthCheckTimeout = 2 * time.Second

// checkHealth is the -health command: 0 if /health of the service on this
// host answers 200, 1 otherwise.
func checkHealth(getenv func(string) string, hc *http.Client) int {
	cfg, err := parseConfig(getenv)
	if err != nil {
		log.Print(err)
		return 1
	}
	_, port, err := net.SplitHostPort(cfg.addr)
	if err != nil {
		log.Printf("%s: %v", envAddr, err)
		return 1
	}
	resp, err := hc.Get("http://" + net.JoinHostPort("127.0.0.1", port) + "/health")
	if err != nil {
		log.Printf("health: %v", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Printf("health: %s", resp.Status)
		return 1
	}
	return 0
}

// crash is the production crash hook for POST /crash: it exits the process
// with code 1 after crashDelay. It returns at once so the handler can finish
// and the response is not cut off.
func crash() {
	log.Printf("crash requested, exiting with code 1 in %s", crashDelay)
	go func() {
		time.Sleep(crashDelay)
		os.Exit(1)
	}()
}
