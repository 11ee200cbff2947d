package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/worker"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

func newWorkerCmd() *cobra.Command {
	cfg := worker.DefaultConfig()
	var (
		httpAddr string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: the agent that runs tasks on this machine's Docker Engine",
		Long: `Run a worker agent.

The worker runs the tasks it is given as Docker containers, keeps its task
records in <data>/worker.db, follows the Docker event stream so a container
that dies is recorded at once, and serves the worker API on --http:

  POST /tasks  GET /tasks  GET /tasks/{id}  DELETE /tasks/{id}
  GET /tasks/{id}/logs  GET /stats

Containers keep running when the worker stops; a restarted worker re-adopts
them (same containers, not restarted).`,
		Example: `  cube worker --name w1 --http 127.0.0.1:5555 --data /tmp/w1
  curl -X POST localhost:5555/tasks -d @task1.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger := newLogger(logLevel)
			cfg.Logger = logger
			return runWorker(cmd.Context(), cfg, httpAddr, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "worker name, stable across restarts (default: the name recorded in --data, else the host name)")
	f.StringVar(&httpAddr, "http", "127.0.0.1:5555", "address the worker API listens on")
	f.StringVar(&cfg.DataDir, "data", "", "data directory for the worker's task records (required)")
	f.DurationVar(&cfg.StopGrace, "stop-grace", cfg.StopGrace, "time a stopped container gets between SIGTERM and SIGKILL")
	f.DurationVar(&cfg.PollInterval, "poll-interval", cfg.PollInterval, "safety-net re-inspection of running tasks (deaths are seen at once through Docker events)")
	f.DurationVar(&cfg.StartTimeout, "start-timeout", cfg.StartTimeout, "bound on pulling, creating and starting one container")
	f.StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn or error")
	_ = cmd.MarkFlagRequired("data")
	return cmd
}

func newLogger(level string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "cube",
		Level:  hclog.LevelFromString(level),
		Output: os.Stderr,
	})
}

// runWorker runs a worker until SIGINT or SIGTERM, then stops it in order:
// HTTP first so clients learn at once, then the agent's loops and store, then
// the Docker client. Containers are left running.
func runWorker(ctx context.Context, cfg worker.Config, httpAddr string, logger hclog.Logger) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	docker, err := worker.NewDocker(worker.DockerConfig{Logger: logger.Named("docker"), CallTimeout: 30 * time.Second, PullTimeout: cfg.StartTimeout})
	if err != nil {
		return err
	}
	defer docker.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := docker.Ping(pctx); err != nil {
		logger.Warn("docker engine does not answer; tasks will fail until it does", "error", err)
	}
	cancel()

	w, err := worker.New(cfg, docker)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		_ = w.Shutdown()
		return fmt.Errorf("listen on %s: %w", httpAddr, err)
	}
	w.Start()
	srv := &http.Server{
		Handler:           api.NewWorkerHandler(w),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("worker started", "name", w.Name(), "http", ln.Addr().String(), "data", cfg.DataDir)

	select {
	case <-ctx.Done():
		logger.Info("shutting down worker", "name", w.Name())
	case err = <-errc:
		logger.Error("http server stopped", "error", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if serr := srv.Shutdown(sctx); serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		logger.Warn("http shutdown", "error", serr)
	}
	if werr := w.Shutdown(); werr != nil {
		logger.Warn("worker shutdown", "error", werr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
