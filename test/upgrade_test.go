package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cube-orch/cube/api"
	"github.com/cube-orch/cube/fsm"
	"github.com/cube-orch/cube/security"
	"github.com/cube-orch/cube/test/testkit"
	"github.com/google/uuid"
)

// buildCubeUpTo builds the cube binary as a build whose command table ends
// at max (fsm.maxCommand, set with -ldflags -X): a manager one version
// behind.
func buildCubeUpTo(t *testing.T, max fsm.CmdType) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), fmt.Sprintf("cube-upto-%d", max))
	flag := fmt.Sprintf("-X github.com/cube-orch/cube/fsm.maxCommand=%d", max)
	out, err := exec.Command("go", "build", "-race", "-ldflags", flag, "-o", bin, "github.com/cube-orch/cube/cmd/cube").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -ldflags %q: %v\n%s", flag, err, out)
	}
	return bin
}

// get does GET path on manager p with the operator token and returns the
// status and body.
func get(c *ProcCluster, p *Proc, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(p, path), nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// tokensOn lists the tokens manager p holds in its own state.
func tokensOn(c *ProcCluster, p *Proc) ([]api.Token, error) {
	status, body, err := get(c, p, "/tokens")
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /tokens on %s: %d %s", p.Name, status, body)
	}
	var toks []api.Token
	return toks, json.Unmarshal(body, &toks)
}

func hasToken(toks []api.Token, accessor uuid.UUID) bool {
	for _, tok := range toks {
		if tok.AccessorID == accessor {
			return true
		}
	}
	return false
}

// A rolling upgrade with a manager one version behind, on real binaries.
// One follower is replaced by a build that knows command types up to 11
// (create-token, not delete-token 12 nor bootstrap-token 13) on its data
// dir: replaying the log, it meets the bootstrap token (13) and stalls,
// keeps running, answers 503 saying why, and logs it. The leader sees it
// advertise 11 and refuses `cube token rm` (12) with a 409 naming it;
// nothing changes. The manager is replaced by the current binary on the
// same data dir: it replays the log through both entries, and `token rm`
// is accepted and reaches every manager.
func TestUpgrade_ManagerOneVersionBehind(t *testing.T) {
	old := buildCubeUpTo(t, fsm.CmdCreateToken)
	c := NewProcCluster(t, 3, 0)
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tok, err := cl.CreateToken(ctx, api.TokenRequest{Name: "ci", Role: api.RoleRead})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	leader := c.LeaderProc()
	var behind *Proc
	for _, p := range c.Managers {
		if p != leader {
			behind = p
			break
		}
	}
	t.Logf("leader %s; %s goes one version behind", leader.Name, behind.Name)

	c.Stop(behind)
	behind.Bin = old
	c.Start(behind)

	// It stalls at the bootstrap token, and says so: 503 with the reason.
	testkit.Eventually(t, 60*time.Second, func() error {
		status, body, err := get(c, behind, "/cluster/self")
		if err != nil {
			return err
		}
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "state machine stalled") ||
			!strings.Contains(string(body), "command type 13") || !strings.Contains(string(body), "upgrade this manager") {
			return fmt.Errorf("GET /cluster/self on %s: %d %s", behind.Name, status, body)
		}
		return nil
	})
	// Its readiness probe, open to all, says not ready and why.
	caOnly, err := security.ClientTLS(c.Sec.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	anonymous := &http.Client{Transport: api.NewTLSTransport("", caOnly)}
	wantProbe(t, anonymous, c.URL(behind, "/health/ready"), http.StatusServiceUnavailable, "upgrade this manager")
	wantProbe(t, anonymous, c.URL(behind, "/health/live"), http.StatusOK, "")
	// The leader sees it advertise 11.
	testkit.Eventually(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		info, err := c.ClientOf(api.ClientOptions{RetryFor: 5 * time.Second}, leader).Cluster(ctx)
		if err != nil {
			return err
		}
		for _, m := range info.Members {
			if m.API == behind.HTTPAddr && m.State == "alive" && m.MaxCommand == 11 {
				return nil
			}
		}
		return fmt.Errorf("the leader's members: %+v", info.Members)
	})

	out, err := c.Cube("token", "rm", tok.AccessorID.String())
	if err == nil {
		t.Fatalf("cube token rm with %s one version behind succeeded:\n%s", behind.Name, out)
	}
	t.Logf("cube token rm with %s behind: %s", behind.Name, strings.TrimSpace(out))
	want := fmt.Sprintf("upgrade %s (applies types up to 11)", behind.Name)
	if !strings.Contains(out, want) || !strings.Contains(out, "HTTP 409") {
		t.Fatalf("cube token rm: %v\n%s\nwant a 409 saying %q", err, out, want)
	}
	for _, p := range c.Managers {
		if p == behind {
			continue
		}
		toks, err := tokensOn(c, p)
		if err != nil || !hasToken(toks, tok.AccessorID) {
			t.Fatalf("after the refused deletion, %s holds %+v (%v), want the token still there", p.Name, toks, err)
		}
	}
	if !behind.Running() {
		t.Fatalf("%s exited; a stalled manager must keep running", behind.Name)
	}
	if b, err := os.ReadFile(behind.log); err != nil || !strings.Contains(string(b), "state machine stalled") {
		t.Fatalf("%s's log does not say it stalled (%v)", behind.Name, err)
	}

	// Upgrade: the current binary on the same data dir.
	c.Stop(behind)
	behind.Bin = ""
	c.Start(behind)
	testkit.Eventually(t, 60*time.Second, func() error {
		status, body, err := get(c, behind, "/cluster/self")
		if err != nil {
			return err
		}
		var st api.ServerStatus
		if status != http.StatusOK || json.Unmarshal(body, &st) != nil || st.MaxCommand != uint8(fsm.MaxCommand) {
			return fmt.Errorf("GET /cluster/self on %s: %d %s", behind.Name, status, body)
		}
		return nil
	})
	wantProbe(t, anonymous, c.URL(behind, "/health/ready"), http.StatusOK, "")
	testkit.Eventually(t, 30*time.Second, func() error {
		out, err := c.Cube("token", "rm", tok.AccessorID.String())
		if err != nil {
			return fmt.Errorf("cube token rm: %v\n%s", err, out)
		}
		return nil
	})
	for _, p := range c.Managers {
		testkit.Eventually(t, 30*time.Second, func() error {
			toks, err := tokensOn(c, p)
			if err != nil {
				return err
			}
			if hasToken(toks, tok.AccessorID) {
				return fmt.Errorf("%s still holds the deleted token", p.Name)
			}
			return nil
		})
	}
}
