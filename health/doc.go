// Package health runs task health checks (HTTP GET or TCP connect) with an interval, a timeout, a failure threshold and a start-up grace, and reports verdicts to the manager.
package health
