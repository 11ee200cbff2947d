// Command netem is a userspace netem: it delays and drops the packets that
// iptables queues to it with the NFQUEUE target. The machine-failure drills
// use it for "a slow, lossy network between machines" where the kernel has
// no sch_netem (tc qdisc netem) but has nfnetlink_queue:
//
//	iptables -t mangle -I POSTROUTING -o eth0 -j NFQUEUE --queue-num 0 --queue-bypass
//	netem --queue 0 --delay 100ms --jitter 50ms --loss 5 [--seed N]
//
// (deploy/machine/netem.sh does both on a machine.) It binds the queue over
// netlink (NETLINK_NETFILTER, NFNL_SUBSYS_QUEUE), copying packet metadata
// only, with a queue of --maxlen packets and the fail-open flag: when the
// queue or the socket's buffer is full the kernel accepts packets instead of
// dropping them, so a slow netem never stalls the machine. Each packet is
// dropped (NF_DROP) with probability --loss percent, or else accepted
// (NF_ACCEPT) after --delay ± a uniform --jitter. As with netem's jitter,
// packets may leave out of order. With --seed the sequence of fates is
// reproducible (for a given order of arrival).
//
// It logs one line at start, the counts (accepted, dropped) every 10 s and at
// exit. On SIGTERM or SIGINT it accepts the packets it holds, unbinds the
// queue and exits 0; --queue-bypass then lets packets through unqueued.
//
// Measured (2 CPUs shared with another drill's six machines, load 7-15): on
// two machine containers (cube-machine:bookworm), with `netem.sh start 100ms
// 50ms 5` on one, UDP round trips between them (3000 packets, one per 2 ms)
// went from a median of 0.15 ms to: min 50.3 ms, p5 56-58 ms, median
// 101-108 ms, p95 146-178 ms; loss 4.4-6.3 % per run (5.0 % of 3000 in the
// last). The tail beyond 150 ms is the loaded host: netem counted up to 7 %
// of its verdicts over 10 ms late (its "late" count). `netem.sh stop` gave
// back a median of 0.11 ms and no loss. A TCP transfer of 2 MB took 80 s
// (jitter reorders packets, as netem's does). TestNetnsUDP does the same
// between two network namespaces: 4.9 % of 2000 lost (seed 1), median
// 101-103 ms, p10 61-62 ms, p90 140-143 ms.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// config is the command line.
type config struct {
	queue         uint16
	delay, jitter time.Duration
	loss          float64 // percent
	seed          uint64
	maxlen        uint32
	every         time.Duration // counts are logged this often
}

func parse(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("netem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	queue := fs.Uint("queue", 0, "the NFQUEUE queue number to bind (0-65535)")
	delay := fs.Duration("delay", 100*time.Millisecond, "mean delay of an accepted packet")
	jitter := fs.Duration("jitter", 0, "the delay varies uniformly by up to ± this (never below 0)")
	loss := fs.Float64("loss", 0, "percentage of packets dropped (0-100)")
	seed := fs.Uint64("seed", 0, "seed of the random fates (0: a random seed, logged)")
	maxlen := fs.Uint("maxlen", 16384, "queue length in packets; beyond it the kernel accepts (fail-open)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: netem --queue N --delay 100ms --jitter 50ms --loss 5 [--seed N] [--maxlen N]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	c := config{queue: uint16(*queue), delay: *delay, jitter: *jitter, loss: *loss,
		seed: *seed, maxlen: uint32(*maxlen), every: 10 * time.Second}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case *queue > 65535:
		return c, fmt.Errorf("--queue %d is not 0-65535", *queue)
	case *delay < 0 || *jitter < 0:
		return c, errors.New("--delay and --jitter must not be negative")
	case !(*loss >= 0 && *loss <= 100):
		return c, fmt.Errorf("--loss %v is not 0-100", *loss)
	case *maxlen < 1 || *maxlen > 1<<24:
		return c, fmt.Errorf("--maxlen %d is not 1-%d", *maxlen, 1<<24)
	}
	if c.seed == 0 {
		c.seed = rand.Uint64() | 1
	}
	return c, nil
}

func run(args []string, stderr io.Writer) int {
	c, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	lg := log.New(stderr, "netem: ", log.LstdFlags|log.Lmicroseconds)
	if err != nil {
		lg.Print(err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, c, lg); err != nil {
		lg.Print(err)
		return 1
	}
	return 0
}

// queue is a netlink socket bound to one NFQUEUE queue.
type queue struct {
	c   *netlink.Conn
	num uint16
	n   *counts
	lg  *log.Logger

	stopping  atomic.Bool   // set before the reader is woken to stop
	replyErrs atomic.Uint64 // error replies seen, to log only the first few
}

func (q *queue) verdict(id, v uint32) error {
	m, err := encodeVerdict(q.num, id, v)
	if err != nil {
		return err
	}
	_, err = q.c.Send(m)
	return err
}

// packet hands a queued packet's id to onPacket; other messages are ignored.
func (q *queue) packet(m netlink.Message, onPacket func(uint32)) {
	num, p, err := decodePacket(m)
	if err != nil {
		if !errors.Is(err, errNotPacket) {
			q.lg.Printf("undecodable message: %v", err)
		}
		return
	}
	if num == q.num {
		q.n.received.Add(1)
		onPacket(p.ID)
	}
}

// bind binds the queue and waits for the kernel's acknowledgement, handing
// the packets that arrive meanwhile to onPacket.
func (q *queue) bind(maxlen uint32, onPacket func(uint32)) error {
	m, err := encodeBind(q.num, maxlen)
	if err != nil {
		return err
	}
	sent, err := q.c.Send(m)
	if err != nil {
		return fmt.Errorf("bind queue %d: %w", q.num, err)
	}
	if err := q.c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	defer q.c.SetReadDeadline(time.Time{}) //nolint:errcheck // the read loop sets it again to stop
	for {
		msgs, err := q.c.Receive()
		if err != nil {
			return fmt.Errorf("bind queue %d: %w", q.num, err)
		}
		acked := false
		for _, m := range msgs {
			if m.Header.Type == netlink.Error && m.Header.Sequence == sent.Header.Sequence {
				acked = true
				continue
			}
			q.packet(m, onPacket)
		}
		if acked {
			return nil
		}
	}
}

// read hands queued packets to onPacket until it fails or stopping is set
// and the socket's read deadline passes.
func (q *queue) read(onPacket func(uint32)) error {
	for {
		msgs, err := q.c.Receive()
		if err != nil {
			if q.stopping.Load() {
				return nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				// The socket's buffer overflowed: the kernel accepted
				// (fail-open) packets this program never saw.
				q.n.overruns.Add(1)
				continue
			}
			var oe *netlink.OpError
			if errors.As(err, &oe) {
				if _, ok := oe.Err.(syscall.Errno); ok {
					// An error reply to a verdict (e.g. for a packet the
					// kernel no longer holds).
					q.n.failed.Add(1)
					if q.replyErrs.Add(1) <= 5 {
						q.lg.Printf("verdict refused: %v", err)
					}
					continue
				}
			}
			return fmt.Errorf("receive: %w", err)
		}
		for _, m := range msgs {
			q.packet(m, onPacket)
		}
	}
}

// setReadBuffer makes the socket's receive buffer large enough for a burst
// of queued packets; beyond it the kernel accepts packets unshaped.
func setReadBuffer(c *netlink.Conn, size int) {
	rc, err := c.SyscallConn()
	if err == nil {
		var serr error
		err = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		})
		if err == nil && serr == nil {
			return
		}
	}
	_ = c.SetReadBuffer(size) // capped by net.core.rmem_max
}

func (n *counts) String() string {
	s := fmt.Sprintf("accepted %d dropped %d (received %d", n.accepted.Load(), n.dropped.Load(), n.received.Load())
	if f := n.failed.Load(); f > 0 {
		s += fmt.Sprintf(", verdict errors %d", f)
	}
	if l := n.late.Load(); l > 0 {
		s += fmt.Sprintf(", %d accepted over %v late, at most %v", l, lateBy,
			time.Duration(n.lateMax.Load()).Round(time.Millisecond))
	}
	if o := n.overruns.Load(); o > 0 {
		s += fmt.Sprintf(", socket overruns %d", o)
	}
	return s + ")"
}

// serve shapes the queue's packets until ctx is done or the socket fails.
func serve(ctx context.Context, c config, lg *log.Logger) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	defer conn.Close()
	setReadBuffer(conn, 8<<20)

	n := &counts{}
	q := &queue{c: conn, num: c.queue, n: n, lg: lg}
	sch := newScheduler(newShaper(c.delay, c.jitter, c.loss, c.seed), q, n)
	schedDone := make(chan struct{})
	go func() { sch.run(); close(schedDone) }()
	onPacket := func(id uint32) { sch.in <- id }

	if err := q.bind(c.maxlen, onPacket); err != nil {
		close(sch.in)
		<-schedDone
		return err
	}
	lg.Printf("queue %d bound: delay %v jitter %v loss %g%% seed %d maxlen %d (fail-open)",
		c.queue, c.delay, c.jitter, c.loss, c.seed, c.maxlen)

	readDone := make(chan error, 1)
	go func() {
		readDone <- q.read(onPacket)
		close(sch.in)
	}()

	tick := time.NewTicker(c.every)
	defer tick.Stop()
	var readErr error
	reading := true
	for reading {
		select {
		case <-ctx.Done():
			reading = false
		case readErr = <-readDone:
			reading = false
		case <-tick.C:
			lg.Print(n)
		}
	}

	// Accept what is held (and, until the queue is unbound, what comes in),
	// then unbind and stop the reader.
	close(sch.pass)
	select {
	case <-sch.released:
	case <-schedDone:
	}
	q.stopping.Store(true) // from here on, errors (e.g. refused verdicts) end the reader
	if m, err := encodeUnbind(c.queue); err == nil {
		if _, err := conn.Send(m); err != nil && readErr == nil {
			lg.Printf("unbind queue %d: %v", c.queue, err)
		}
	}
	if readErr == nil {
		_ = conn.SetReadDeadline(time.Now())
		readErr = <-readDone
	}
	<-schedDone
	lg.Printf("queue %d unbound: %v", c.queue, n)
	return readErr
}
