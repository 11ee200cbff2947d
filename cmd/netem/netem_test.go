package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
)

func TestShaperDelayBounds(t *testing.T) {
	const draws = 100000
	delay, jitter := 100*time.Millisecond, 50*time.Millisecond
	s := newShaper(delay, jitter, 0, 1)
	var sum float64
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	buckets := make([]int, 10) // deciles of [delay-jitter, delay+jitter]
	for range draws {
		drop, d := s.next()
		if drop {
			t.Fatal("dropped a packet with loss 0")
		}
		if d < delay-jitter || d > delay+jitter {
			t.Fatalf("delay %v outside %v ± %v", d, delay, jitter)
		}
		lo, hi = min(lo, d), max(hi, d)
		sum += float64(d)
		buckets[min(int(10*(d-delay+jitter)/(2*jitter)), 9)]++
	}
	if mean := time.Duration(sum / draws); mean < delay-time.Millisecond || mean > delay+time.Millisecond {
		t.Errorf("mean delay %v, want %v ± 1ms", mean, delay)
	}
	if lo > delay-jitter+time.Millisecond || hi < delay+jitter-time.Millisecond {
		t.Errorf("delays span [%v, %v], want about [%v, %v]", lo, hi, delay-jitter, delay+jitter)
	}
	for i, n := range buckets { // uniform: 10000 each, sd ≈ 95
		if n < draws/10-600 || n > draws/10+600 {
			t.Errorf("decile %d holds %d of %d draws, want about %d (uniform)", i, n, draws, draws/10)
		}
	}

	// No jitter: exactly the delay. Jitter beyond the delay: never below 0.
	s = newShaper(delay, 0, 0, 1)
	for range 100 {
		if _, d := s.next(); d != delay {
			t.Fatalf("delay %v without jitter, want %v", d, delay)
		}
	}
	s = newShaper(10*time.Millisecond, 50*time.Millisecond, 0, 1)
	zeros := 0
	for range 10000 {
		_, d := s.next()
		if d < 0 || d > 60*time.Millisecond {
			t.Fatalf("delay %v outside [0, 60ms]", d)
		}
		if d == 0 {
			zeros++
		}
	}
	if zeros < 3000 || zeros > 5000 { // P(uniform(-40ms, 60ms) ≤ 0) = 0.4
		t.Errorf("%d of 10000 delays clamped to 0, want about 4000", zeros)
	}
}

func TestShaperLoss(t *testing.T) {
	const draws = 200000
	for _, loss := range []float64{0, 0.5, 5, 50, 100} {
		s := newShaper(time.Millisecond, 0, loss, 42)
		dropped := 0
		for range draws {
			if drop, _ := s.next(); drop {
				dropped++
			}
		}
		got := 100 * float64(dropped) / draws
		// 5 standard deviations of a binomial rate, in percent.
		tol := 5 * 100 * math.Sqrt(loss/100*(1-loss/100)/draws)
		if math.Abs(got-loss) > tol {
			t.Errorf("loss %v%%: dropped %.3f%% of %d, want within ±%.3f", loss, got, draws, tol)
		}
	}

	// A seed fixes the fates.
	fates := func(seed uint64) []time.Duration {
		s := newShaper(100*time.Millisecond, 50*time.Millisecond, 5, seed)
		var f []time.Duration
		for range 1000 {
			drop, d := s.next()
			if drop {
				d = -1
			}
			f = append(f, d)
		}
		return f
	}
	if !slices.Equal(fates(7), fates(7)) {
		t.Error("seed 7 gave two different sequences of fates")
	}
	if slices.Equal(fates(7), fates(8)) {
		t.Error("seeds 7 and 8 gave the same fates")
	}
}

func TestVerdictEncoding(t *testing.T) {
	m, err := encodeVerdict(3, 0xdeadbeef, nfAccept)
	if err != nil {
		t.Fatal(err)
	}
	// (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT, a request without ack.
	if m.Header.Type != 0x0301 || m.Header.Flags != netlink.Request {
		t.Errorf("header type %#x flags %v, want 0x301 request", uint16(m.Header.Type), m.Header.Flags)
	}
	want := []byte{
		0, 0, 0, 3, // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id 3 (big endian)
		12, 0, 2, 0, // nlattr: len 12, NFQA_VERDICT_HDR (native endian)
		0, 0, 0, 1, // verdict NF_ACCEPT (big endian)
		0xde, 0xad, 0xbe, 0xef, // packet id (big endian)
	}
	if !bytes.Equal(m.Data, want) {
		t.Errorf("verdict data\n got % x\nwant % x", m.Data, want)
	}
	for _, v := range []uint32{nfAccept, nfDrop} {
		m, err := encodeVerdict(65535, 7, v)
		if err != nil {
			t.Fatal(err)
		}
		q, id, verdict, err := decodeVerdict(m)
		if err != nil || q != 65535 || id != 7 || verdict != v {
			t.Errorf("decodeVerdict = %d %d %d %v, want 65535 7 %d", q, id, verdict, err, v)
		}
	}
}

func TestPacketDecoding(t *testing.T) {
	// As the kernel sends it: nfgenmsg (AF_INET, queue 2), NFQA_PACKET_HDR,
	// then NFQA_MARK and NFQA_IFINDEX_OUTDEV.
	attr := func(typ uint16, data ...byte) []byte {
		b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	data := []byte{2, 0, 0, 2}
	data = append(data, attr(1, 0, 0, 0x01, 0x02, 0x08, 0x00, 4)...) // id 258, IPv4, NF_INET_POST_ROUTING
	data = append(data, attr(3, 0, 0, 0, 9)...)
	data = append(data, attr(6, 0, 0, 0, 2)...)
	m := netlink.Message{Header: netlink.Header{Type: 0x0300}, Data: data}
	q, p, err := decodePacket(m)
	if err != nil || q != 2 || p != (packetHdr{ID: 258, HWProtocol: 0x0800, Hook: 4}) {
		t.Errorf("decodePacket = %d %+v %v, want 2 {258 0x800 4}", q, p, err)
	}

	want := packetHdr{ID: 0xfffffffe, HWProtocol: 0x86dd, Hook: 3}
	m, err = encodePacket(9, want)
	if err != nil {
		t.Fatal(err)
	}
	if q, p, err := decodePacket(m); err != nil || q != 9 || p != want {
		t.Errorf("round trip = %d %+v %v, want 9 %+v", q, p, err, want)
	}

	// Not a packet: a verdict, an ack (nlmsgerr), another subsystem.
	v, _ := encodeVerdict(9, 1, nfAccept)
	for _, m := range []netlink.Message{v, {Header: netlink.Header{Type: 0x0100}, Data: []byte{2, 0, 0, 0}}} {
		if _, _, err := decodePacket(m); !errors.Is(err, errNotPacket) {
			t.Errorf("decodePacket(type %#x) = %v, want errNotPacket", uint16(m.Header.Type), err)
		}
	}
	// Broken: no header attribute, a short one, a short message.
	for _, data := range [][]byte{{2, 0, 0, 2}, append([]byte{2, 0, 0, 2}, attr(1, 0, 0, 1)...), {2, 0}} {
		if _, _, err := decodePacket(netlink.Message{Header: netlink.Header{Type: 0x0300}, Data: data}); err == nil || errors.Is(err, errNotPacket) {
			t.Errorf("decodePacket(% x) = %v, want a decoding error", data, err)
		}
	}
}

func TestConfigEncoding(t *testing.T) {
	m, err := encodeBind(5, 16384)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Type != 0x0302 || m.Header.Flags != netlink.Request|netlink.Acknowledge {
		t.Errorf("header type %#x flags %v, want 0x302 request|ack", uint16(m.Header.Type), m.Header.Flags)
	}
	want := []byte{
		0, 0, 0, 5,
		8, 0, 1, 0, 1, 0, 0, 0, // NFQA_CFG_CMD: NFQNL_CFG_CMD_BIND, pad, pf 0
		9, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, // NFQA_CFG_PARAMS: copy_range 0, NFQNL_COPY_META (+ padding)
		8, 0, 3, 0, 0, 0, 0x40, 0, // NFQA_CFG_QUEUE_MAXLEN 16384
		8, 0, 4, 0, 0, 0, 0, 1, // NFQA_CFG_MASK: FAIL_OPEN
		8, 0, 5, 0, 0, 0, 0, 1, // NFQA_CFG_FLAGS: FAIL_OPEN
	}
	if !bytes.Equal(m.Data, want) {
		t.Errorf("bind data\n got % x\nwant % x", m.Data, want)
	}
	m, err = encodeUnbind(5)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0, 0, 0, 5, 8, 0, 1, 0, 2, 0, 0, 0}; !bytes.Equal(m.Data, want) || m.Header.Flags != netlink.Request {
		t.Errorf("unbind data % x flags %v, want % x request", m.Data, m.Header.Flags, want)
	}
}

// fakeVerdicts records the verdicts a scheduler sends.
type fakeVerdicts struct {
	mu   sync.Mutex
	got  map[uint32]uint32
	at   map[uint32]time.Time
	sent chan struct{}
}

func newFakeVerdicts() *fakeVerdicts {
	return &fakeVerdicts{got: map[uint32]uint32{}, at: map[uint32]time.Time{}, sent: make(chan struct{}, 10000)}
}

func (f *fakeVerdicts) verdict(id, v uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.got[id]; dup {
		panic("two verdicts for one packet")
	}
	f.got[id], f.at[id] = v, time.Now()
	f.sent <- struct{}{}
	return nil
}

func (f *fakeVerdicts) wait(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-f.sent:
		case <-time.After(5 * time.Second):
			t.Fatalf("waited 5 s for %d verdicts", n)
		}
	}
}

func TestSchedulerDelays(t *testing.T) {
	f := newFakeVerdicts()
	n := &counts{}
	s := newScheduler(newShaper(40*time.Millisecond, 20*time.Millisecond, 20, 3), f, n)
	done := make(chan struct{})
	go func() { s.run(); close(done) }()
	in := map[uint32]time.Time{}
	for id := range uint32(500) {
		in[id] = time.Now()
		s.in <- id
		time.Sleep(200 * time.Microsecond)
	}
	f.wait(t, 500)
	close(s.in)
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, v := range f.got {
		d := f.at[id].Sub(in[id])
		switch {
		case v == nfDrop && d > 250*time.Millisecond:
			t.Errorf("packet %d dropped after %v, want at once", id, d)
		case v == nfAccept && (d < 20*time.Millisecond || d > 300*time.Millisecond):
			// Never early; late only by what a loaded test machine adds.
			t.Errorf("packet %d accepted after %v, want 40ms ± 20ms (+ scheduling)", id, d)
		}
	}
	if a, d := n.accepted.Load(), n.dropped.Load(); a+d != 500 || d < 60 || d > 140 {
		t.Errorf("accepted %d dropped %d, want 500 in all, about 100 dropped", a, d)
	}
}

func TestSchedulerPass(t *testing.T) {
	f := newFakeVerdicts()
	n := &counts{}
	s := newScheduler(newShaper(time.Hour, 0, 0, 1), f, n)
	done := make(chan struct{})
	go func() { s.run(); close(done) }()
	for id := range uint32(10) {
		s.in <- id
	}
	time.Sleep(20 * time.Millisecond) // held for an hour
	if got := n.accepted.Load(); got != 0 {
		t.Fatalf("%d accepted before their hour", got)
	}
	close(s.pass)
	select {
	case <-s.released:
	case <-time.After(5 * time.Second):
		t.Fatal("held packets not released")
	}
	if got := n.accepted.Load(); got != 10 {
		t.Errorf("%d accepted on release, want 10", got)
	}
	s.in <- 10 // after the release: accepted at once
	f.wait(t, 11)
	close(s.in)
	<-done
	if got := n.accepted.Load(); got != 11 {
		t.Errorf("%d accepted, want 11", got)
	}
}

func TestParse(t *testing.T) {
	c, err := parse([]string{"--queue", "3", "--delay", "100ms", "--jitter", "50ms", "--loss", "5", "--seed", "9"}, io.Discard)
	if err != nil || c.queue != 3 || c.delay != 100*time.Millisecond || c.jitter != 50*time.Millisecond || c.loss != 5 || c.seed != 9 || c.maxlen != 16384 {
		t.Errorf("parse = %+v %v", c, err)
	}
	if c, err := parse(nil, io.Discard); err != nil || c.seed == 0 {
		t.Errorf("parse() = %+v %v, want defaults and a random seed", c, err)
	}
	for _, args := range [][]string{
		{"--queue", "65536"}, {"--delay", "-1s"}, {"--jitter", "-1ms"}, {"--loss", "101"}, {"--loss", "-1"},
		{"--loss", "NaN"}, {"--maxlen", "0"}, {"extra"}, {"--bogus"},
	} {
		if _, err := parse(args, io.Discard); err == nil {
			t.Errorf("parse(%q) accepted", args)
		}
	}
	if code := run([]string{"--loss", "200"}, io.Discard); code != 2 {
		t.Errorf("run with a bad flag = %d, want 2", code)
	}
}
