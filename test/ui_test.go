package test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// The web page of the cluster (package ui) in a real browser: headless
// Chromium driven through the DevTools protocol (chromedp), against real
// managers and workers with security on, as `make cluster` runs them.
//
// CUBE_UI_SCREENSHOT=DIR saves screenshots of the page (1200x800 PNGs) into
// DIR as the test goes: the README's come from
// `CUBE_UI_SCREENSHOT=$PWD/docs/ui go test -run TestUI_Browser ./test`.

// uiWait bounds each wait for the page to show something: generous, as
// every deadline of the end-to-end tests (a loaded 2-core machine starts
// containers slowly).
const uiWait = 60 * time.Second

// browser is one tab of a headless Chromium of its own.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu         sync.Mutex
	exceptions []string // uncaught exceptions of the page's script
}

// newBrowser starts a headless Chromium, closed when the test ends. A
// missing Chromium fails the test (never skips it): CI installs it.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the web page's tests drive a real browser, and there is no `chromium` on PATH (%v); "+
			"install it: apt-get install -y chromium (Debian; .ci/run does it)", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// Root in a container has no sandbox for Chromium to use.
		chromedp.NoSandbox,
		// The managers' certificates are signed by this test cluster's own
		// CA, which the new browser profile does not know. Tests only: a
		// person adds the cluster's CA to their browser.
		chromedp.IgnoreCertErrors,
		chromedp.WindowSize(1200, 800),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}

	// The first Do starts the browser and binds it to ctx (a timeout there
	// would close the browser with it), so its start is bounded by a timer
	// that cancels ctx instead.
	stop := time.AfterFunc(uiWait, cancel)
	err = chromedp.Do(ctx, chromedp.EmulateViewport(1200, 800))
	if !stop.Stop() {
		err = fmt.Errorf("chromium did not start within %s: %w", uiWait, err)
	}
	if err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium (%s): %v", path, err)
	}

	// Every uncaught exception of the page fails the test at its end: the
	// script must handle every failure it meets (a dead manager, a 401).
	events := chromedp.Events(ctx, runtime.ExceptionThrown)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range events {
			if err != nil {
				return // the browser closed
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, describeException(ev))
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
	})
	return b
}

func describeException(ev runtime.EventExceptionThrown) string {
	d := ev.ExceptionDetails
	if d == nil {
		return "(no details)"
	}
	msg := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		msg += ": " + d.Exception.Description
	}
	return fmt.Sprintf("%s (%s line %d)", msg, d.URL, d.LineNumber+1)
}

// do runs actions on the tab within uiWait.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\n%s", what, err, b.pageText())
	}
}

// waitFor waits until the JavaScript expression js is true on the page.
func (b *browser) waitFor(what string, within time.Duration, js string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, within+10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+js+")",
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(within)))
	if err != nil {
		b.t.Fatalf("the page did not show %s within %s: %v\n%s", what, within, err, b.pageText())
	}
	b.t.Logf("page shows %s (%s)", what, time.Since(start).Round(10*time.Millisecond))
}

// text evaluates js on the page to a string.
func (b *browser) text(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiWait)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v\n%s", js, err, b.pageText())
	}
	return s
}

// pageText is what the page shows, for a failure's message.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return fmt.Sprintf("(cannot read the page: %v)", err)
	}
	return "--- the page shows:\n" + s
}

// click clicks (a real mouse click) the element sel selects.
func (b *browser) click(what, sel string) {
	b.t.Helper()
	b.do("click "+what, chromedp.Click(chromedp.CSS(sel)))
}

// confirmClick clicks a Stop or Drain button twice: the first click arms
// it, the second, once the page shows it armed, sends the request.
func (b *browser) confirmClick(what, sel, armedText string) {
	b.t.Helper()
	b.click(what, sel)
	b.waitFor(what+" armed", uiWait, fmt.Sprintf(`(document.querySelector(%q) || {}).textContent === %q`, sel, armedText))
	b.click(what+" (confirm)", sel)
}

// screenshot saves the viewport as DIR/name when CUBE_UI_SCREENSHOT=DIR.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("CUBE_UI_SCREENSHOT")
	if dir == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, uiWait)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	small, err := paletted(raw)
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, small, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s (%d KB; %d KB as Chromium made it)", path, len(small)/1024, len(raw)/1024)
}

// paletted re-encodes a PNG screenshot with the 256 colours it uses most,
// each pixel mapped to the nearest of them: a page of flat colours and
// anti-aliased text looks the same and takes a quarter of the bytes, which
// keeps the README's images small.
func paletted(raw []byte) ([]byte, error) {
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode the screenshot: %w", err)
	}
	r := img.Bounds()
	counts := make(map[color.RGBA]int)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			counts[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	colors := slices.Collect(maps.Keys(counts))
	slices.SortFunc(colors, func(a, b color.RGBA) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return cmp.Compare(uint32(a.R)<<24|uint32(a.G)<<16|uint32(a.B)<<8|uint32(a.A), uint32(b.R)<<24|uint32(b.G)<<16|uint32(b.B)<<8|uint32(b.A))
	})
	var pal color.Palette
	for _, c := range colors[:min(256, len(colors))] {
		pal = append(pal, c)
	}
	out := image.NewPaletted(r, pal)
	index := make(map[color.RGBA]uint8, len(colors))
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			i, ok := index[c]
			if !ok {
				i = uint8(pal.Index(c))
				index[c] = i
			}
			out.SetColorIndex(x, y, i)
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// uiTaskRow selects the page's row of a task.
func uiTaskRow(id uuid.UUID) string { return fmt.Sprintf(`tr[data-task=%q]`, id.String()) }

// uiWorkerRow selects the page's row of a worker.
func uiWorkerRow(name string) string { return fmt.Sprintf(`tr[data-worker=%q]`, name) }

// uiTask reads one task through the API (a consistent read).
func uiTask(t *testing.T, c *ProcCluster, id uuid.UUID) (api.Task, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Client().Task(ctx, id, true)
}

// TestUI_Browser opens the page of a follower of a real cluster (3
// managers, 3 workers, security on) in Chromium and uses it as a person
// would: the token form (none, a wrong one; a read token, with which a
// drain is refused and said so; Forget token; the operator's), the servers
// with their leader and the workers, submitted tasks turning Running with
// their changes in the event feed, the Stop and Drain buttons (checked
// through the API), a leader killed (the page shows the new one and still
// stops tasks), and the manager that served the page killed (a banner links
// to the page of a manager still up, which works once given the token).
func TestUI_Browser(t *testing.T) {
	c := NewProcCluster(t, 3, 3)
	b := newBrowser(t)
	leader := c.LeaderProc()
	var serving, third *Proc
	for _, p := range c.Managers {
		switch {
		case p == leader:
		case serving == nil:
			serving = p
		default:
			third = p
		}
	}
	t.Logf("leader %s; the page is served by %s", leader.Name, serving.Name)

	ok := t.Run("token", func(t *testing.T) {
		b.t = t
		b.do("open the page", chromedp.Navigate(c.URL(serving, "/ui/")))
		b.waitFor("the token form", uiWait, `!document.querySelector('#login').hidden &&
			document.querySelector('#auth-message').textContent.includes('asks for a token')`)
		if n := b.text(`String(document.querySelectorAll('#servers tr, #workers tr, #tasks tr').length)`); n != "0" {
			t.Fatalf("without a token the page shows %s rows of data", n)
		}
		b.do("type a wrong token", chromedp.SendKeys(chromedp.ID("token-input"), "cube_not-a-token-of-this-cluster"))
		b.click("Use token", `#token-form button[type=submit]`)
		b.waitFor("the wrong token refused", uiWait, `document.querySelector('#auth-message').textContent.includes('refused this token (401)') &&
			document.querySelector('#main').hidden`)

		// A read token shows the cluster; draining with it is refused,
		// and the page says so.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		viewer, err := c.Client().CreateToken(ctx, api.TokenRequest{Name: "viewer", Role: api.RoleRead})
		if err != nil {
			t.Fatal(err)
		}
		// The page asks its own manager, which may apply the token a moment
		// after the leader committed it.
		waitToken(t, &Identity{t: t, Token: viewer.Secret, CA: c.Sec.CA}, []string{serving.HTTPAddr})
		b.do("type a read token", chromedp.SendKeys(chromedp.ID("token-input"), viewer.Secret))
		b.click("Use token", `#token-form button[type=submit]`)
		w1 := c.Workers[0].Name
		b.waitFor("the workers to a read token", uiWait, fmt.Sprintf(`!!document.querySelector(%q)`, uiWorkerRow(w1)))
		b.confirmClick("Drain "+w1+" with a read token", uiWorkerRow(w1)+` button[data-action="drain"]`, "Confirm drain")
		b.waitFor("the drain refused (403)", uiWait, `(m => !m.hidden && m.classList.contains('error') &&
			m.textContent.includes('Not allowed with this token (403)'))(document.querySelector('#message'))`)
		nodes, err := c.Client().Nodes(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Drain {
				t.Fatalf("worker %s drains after a drain the page was refused", n.Name)
			}
		}
		b.click("Forget token", `#forget-token`)
		b.waitFor("the token form again", uiWait, `!document.querySelector('#login').hidden && document.querySelector('#main').hidden &&
			sessionStorage.getItem('cube-token') === null`)

		b.do("type the operator token", chromedp.SendKeys(chromedp.ID("token-input"), c.Sec.Token))
		b.click("Use token", `#token-form button[type=submit]`)
		b.waitFor("3 servers with leader "+leader.Name, uiWait, fmt.Sprintf(`document.querySelectorAll('#servers tr').length === 3 &&
			document.querySelector('#leader').dataset.id === %q &&
			(r => r && r.dataset.server === %q)(document.querySelector('#servers tr[data-leader="true"]'))`, leader.Name, leader.Name))
		b.waitFor("3 workers alive", uiWait, `document.querySelectorAll('#workers tr[data-state="alive"]').length === 3`)
		for _, w := range c.Workers {
			b.waitFor("worker "+w.Name, uiWait, fmt.Sprintf(`!!document.querySelector(%q)`, uiWorkerRow(w.Name)))
		}
		b.waitFor("the event feed live", uiWait, `document.querySelector('#events-status').dataset.status === 'live'`)
	})
	if !ok {
		return
	}

	var ids []uuid.UUID
	ok = t.Run("tasks run", func(t *testing.T) {
		b.t = t
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := range 4 {
			task, _, err := c.Client().SubmitTask(ctx, api.TaskEvent{State: api.Running, Task: echoTask(fmt.Sprintf("web-%d", i+1))})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, task.ID)
		}
		running := waitRunning(t, c, ids)
		for _, id := range ids {
			b.waitFor(fmt.Sprintf("task %s Running on %s", running[id].Name, running[id].Worker), uiWait,
				fmt.Sprintf(`(r => r && r.dataset.state === 'Running' && r.dataset.worker === %q)(document.querySelector(%q))`,
					running[id].Worker, uiTaskRow(id)))
			b.waitFor("the feed's change of "+running[id].Name+" to Running", uiWait,
				fmt.Sprintf(`!!document.querySelector('#events li[data-task=%q][data-state="Running"]')`, id.String()))
		}
	})
	if !ok {
		return
	}

	ok = t.Run("stop button", func(t *testing.T) {
		b.t = t
		uiStop(t, b, c, ids[0])
	})
	if !ok {
		return
	}

	ok = t.Run("drain button", func(t *testing.T) {
		b.t = t
		task, err := uiTask(t, c, ids[1])
		if err != nil {
			t.Fatal(err)
		}
		victim := task.Worker
		b.confirmClick("Drain "+victim, uiWorkerRow(victim)+` button[data-action="drain"]`, "Confirm drain")
		testkit.Eventually(t, uiWait, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nodes, err := c.Client().Nodes(ctx, true)
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.Name == victim && n.Drain {
					return nil
				}
			}
			return fmt.Errorf("worker %s is not draining: %+v", victim, nodes)
		})
		b.waitFor(victim+" draining", uiWait, fmt.Sprintf(`(r => r && r.dataset.drain === 'true')(document.querySelector(%q))`, uiWorkerRow(victim)))
		// Its task moves: Running elsewhere, on the API and on the page.
		var moved api.Task
		testkit.Eventually(t, uiWait, func() error {
			if moved, err = uiTask(t, c, ids[1]); err != nil {
				return err
			}
			if moved.State != api.Running || moved.Worker == victim {
				return fmt.Errorf("task %s is %s on %s", ids[1], moved.State, moved.Worker)
			}
			return nil
		})
		b.waitFor(fmt.Sprintf("task %s moved to %s", moved.Name, moved.Worker), uiWait,
			fmt.Sprintf(`(r => r && r.dataset.state === 'Running' && r.dataset.worker === %q)(document.querySelector(%q))`, moved.Worker, uiTaskRow(ids[1])))
		b.screenshot("cluster.png")
	})
	if !ok {
		return
	}

	ok = t.Run("leader killed", func(t *testing.T) {
		b.t = t
		c.Kill(leader)
		b.waitFor("a leader other than "+leader.Name, 20*time.Second, fmt.Sprintf(`(id => id !== '' && id !== %q)(document.querySelector('#leader').dataset.id)`, leader.Name))
		next := c.LeaderProc()
		b.waitFor("the leader the API names, "+next.Name, uiWait, fmt.Sprintf(`document.querySelector('#leader').dataset.id === %q`, next.Name))
		// Writes from the page go on through the new leader.
		uiStop(t, b, c, ids[2])
	})
	if !ok {
		return
	}

	t.Run("serving manager killed", func(t *testing.T) {
		b.t = t
		c.Kill(serving)
		link := fmt.Sprintf(`#banner a[data-manager=%q]`, third.Name)
		b.waitFor("the banner linking to "+third.Name, uiWait, fmt.Sprintf(`!document.querySelector('#banner').hidden &&
			document.querySelector('#banner').textContent.includes('stopped answering') && !!document.querySelector(%q)`, link))
		b.screenshot("manager-down.png")
		href := b.text(fmt.Sprintf(`document.querySelector(%q).href`, link))
		if want := c.URL(third, "/ui/"); href != want {
			t.Fatalf("the banner links %s to %s, want %s", third.Name, href, want)
		}
		// Another origin: the token is asked for again there.
		b.do("follow the link", chromedp.Navigate(href))
		b.waitFor("the token form on "+third.Name, uiWait, `!document.querySelector('#login').hidden`)
		b.do("type the operator token", chromedp.SendKeys(chromedp.ID("token-input"), c.Sec.Token))
		b.click("Use token", `#token-form button[type=submit]`)
		b.waitFor(third.Name+"'s page with its servers and tasks", uiWait, fmt.Sprintf(`document.querySelectorAll('#servers tr').length === 3 &&
			document.querySelector('#served-by').textContent === %q && !!document.querySelector(%q)`, "served by "+third.Name, uiTaskRow(ids[3])))
	})
}

// uiStop stops a task with its Stop button and checks through the API that
// it stopped, then that the page shows it Completed.
func uiStop(t *testing.T, b *browser, c *ProcCluster, id uuid.UUID) {
	t.Helper()
	b.confirmClick("Stop "+id.String(), uiTaskRow(id)+` button[data-action="stop"]`, "Confirm stop")
	testkit.Eventually(t, uiWait, func() error {
		task, err := uiTask(t, c, id)
		if err != nil {
			return err
		}
		if task.State != api.Completed || task.DesiredState != api.Completed {
			return fmt.Errorf("task %s is %s (desired %s): %s", id, task.State, task.DesiredState, task.Reason)
		}
		return nil
	})
	b.waitFor("task "+id.String()+" Completed", uiWait, fmt.Sprintf(`(r => r && r.dataset.state === 'Completed')(document.querySelector(%q))`, uiTaskRow(id)))
	if n := len(c.Containers()[id.String()]); n != 0 {
		t.Fatalf("task %s stopped, but %d of its containers still run", id, n)
	}
}
