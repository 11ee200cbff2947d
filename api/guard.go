package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// access is what a route of the manager API asks of its caller.
type access int

// The kinds of access. The zero value is deliberately "no entry": a route
// missing from managerRoutes is refused, never open.
const (
	accessNone access = iota
	// accessAuthenticated: any caller who proved who it is (the 404
	// fallback, so that a stranger learns nothing, not even which routes
	// exist).
	accessAuthenticated
	accessRead
	accessSubmit
	accessOperator
	// accessWorker: a worker certificate; POST /reports also checks that the
	// report names that worker.
	accessWorker
	// accessOpen: everyone, without credentials: the probes, which say
	// only ready or not (probes.go), and the web page's static files,
	// which hold no data (ui.go).
	accessOpen
)

// String says what a refused caller lacked, for the 403 message.
func (a access) String() string {
	switch a {
	case accessAuthenticated:
		return "credentials"
	case accessRead:
		return "role read"
	case accessSubmit:
		return "role submit"
	case accessOperator:
		return "role operator"
	case accessWorker:
		return "a worker certificate"
	case accessOpen:
		return "nothing"
	}
	return "a permission no route has (this route is missing from the permission table)"
}

// managerRoutes is the permission of every route of the manager API, keyed
// by the pattern it is registered with. TestManagerRoutes_AllHavePermissions
// fails when a route is registered without an entry; at run time such a
// route is refused to everyone (fail closed). The token routes are listed
// before they are registered so that they can never be open, even for one
// commit.
var managerRoutes = map[string]access{
	"GET /tasks":                   accessRead,
	"GET /tasks/{id}":              accessRead,
	"GET /nodes":                   accessRead,
	"GET /cluster":                 accessRead,
	"GET /events":                  accessRead,
	"GET /tasks/{id}/logs":         accessRead,
	"POST /tasks":                  accessSubmit,
	"DELETE /tasks/{id}":           accessSubmit,
	"POST /nodes/{name}/drain":     accessOperator,
	"POST /cluster/servers":        accessOperator,
	"DELETE /cluster/servers/{id}": accessOperator,
	"GET /cluster/self":            accessOperator, // managers ask each other (promotion)
	"POST /tokens":                 accessOperator,
	"GET /tokens":                  accessOperator,
	"DELETE /tokens/{accessor}":    accessOperator,
	"GET /operator/snapshot":       accessOperator, // every task and the token hashes
	"PUT /operator/snapshot":       accessOperator,
	"POST " + GCPath:               accessOperator,
	// Services: reads as task reads, writes as task writes (a service is
	// tasks kept running).
	"GET " + ServicesPath:                       accessRead,
	"GET " + ServicesPath + "/{name}":           accessRead,
	"POST " + ServicesPath:                      accessSubmit,
	"PUT " + ServicesPath + "/{name}":           accessSubmit,
	"DELETE " + ServicesPath + "/{name}":        accessSubmit,
	"POST " + ServicesPath + "/{name}/scale":    accessSubmit,
	"POST " + ServicesPath + "/{name}/rollback": accessSubmit,
	"POST /reports":                             accessWorker,
	"POST " + ReportBatchPath:                   accessWorker,
	patternLive:                                 accessOpen,
	patternReady:                                accessOpen,
	patternMetrics:                              accessRead,
	// The web page: static files, no data (ui.go).
	patternUI:   accessOpen,
	patternRoot: accessOpen,
	"/":         accessAuthenticated,
}

// gossipKeyringPath roots the gossip keyring routes: every method on it and
// below it needs role operator, whatever patterns they are registered with.
const gossipKeyringPath = "/gossip/keyring"

// routeAccess returns the access the route registered as pattern needs;
// accessNone for a route with no permission.
func routeAccess(pattern string) access {
	if a, ok := managerRoutes[pattern]; ok {
		return a
	}
	path := pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		path = p
	}
	if path == gossipKeyringPath || strings.HasPrefix(path, gossipKeyringPath+"/") {
		return accessOperator
	}
	return accessNone
}

// roleRank orders the token roles; 0 for anything else.
func roleRank(r Role) int {
	switch r {
	case RoleRead:
		return 1
	case RoleSubmit:
		return 2
	case RoleOperator:
		return 3
	}
	return 0
}

// role is the token role that a route of read, submit or operator access
// needs; "" for the others.
func (a access) role() Role {
	switch a {
	case accessRead:
		return RoleRead
	case accessSubmit:
		return RoleSubmit
	case accessOperator:
		return RoleOperator
	}
	return ""
}

// allows reports whether c may use a route that needs a.
func (a access) allows(c Caller) bool {
	switch a {
	case accessAuthenticated:
		return true
	case accessRead, accessSubmit, accessOperator:
		return c.Kind != CallerWorker && roleRank(c.Role) >= roleRank(a.role())
	case accessWorker:
		return c.Kind == CallerWorker && c.Name != ""
	case accessOpen:
		return true
	}
	return false
}

// String names the caller in messages and logs: its kind, name and role.
func (c Caller) String() string {
	switch {
	case c.Kind == CallerAnonymous:
		return "anonymous caller (security off)"
	case c.Kind == CallerWorker:
		return fmt.Sprintf("worker %q (a worker certificate, no role)", c.Name)
	case c.Role == "":
		return fmt.Sprintf("%s %q (no role)", c.Kind, c.Name)
	}
	return fmt.Sprintf("%s %q (role %s)", c.Kind, c.Name, c.Role)
}

// normalize gives a certificate caller the role its certificate carries: a
// manager or client certificate is operator, a worker certificate has no
// role (only its own reports). A token keeps its own role.
func normalize(c Caller) Caller {
	switch c.Kind {
	case CallerManager, CallerClient:
		c.Role = RoleOperator
	case CallerWorker:
		c.Role = ""
	}
	return c
}

// knownKind reports whether k is a kind an Authenticator or a forwarding
// manager may establish. CallerAnonymous is not one: with security on,
// "nobody" is refused, not trusted.
func knownKind(k string) bool {
	switch k {
	case CallerManager, CallerWorker, CallerClient, CallerToken:
		return true
	}
	return false
}

// callerKey is the context key of the request's effective Caller.
type callerKey struct{}

// ContextWithCaller returns ctx carrying c as the caller of the request.
// The handlers do this for every request they admit; services read it with
// CallerFrom.
func ContextWithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller a handler admitted the request for: the
// effective one, that is the original caller of a request a follower
// forwarded. Without an Authenticator (security off) it is a CallerAnonymous
// with role operator. false outside a request of the API handlers.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// anonymous is the caller of every request when security is off.
var anonymous = Caller{Kind: CallerAnonymous, Name: "anonymous", Role: RoleOperator}

// guard authenticates requests and checks them against route permissions.
// With a nil auth it admits everything, as CallerAnonymous.
type guard struct {
	auth Authenticator
	log  hclog.Logger
}

// admit establishes the effective caller of r and checks that it may use
// the route registered as pattern. It returns r carrying the caller in its
// context, or false once it has answered the refusal itself.
//
// A request bearing HeaderCaller is taken to act for the Caller it names
// only when the direct caller is a manager certificate (a follower
// forwarding); the header is removed in every case, so a handler or a
// forward never relays what a caller wrote there.
func (g *guard) admit(w http.ResponseWriter, r *http.Request, pattern string) (*http.Request, bool) {
	if g.auth == nil {
		return r.WithContext(ContextWithCaller(r.Context(), anonymous)), true
	}
	if routeAccess(pattern) == accessOpen {
		// No credentials asked, none checked, and no caller in the
		// context: an open route's handler acts for nobody.
		r.Header.Del(HeaderCaller)
		return r, true
	}
	direct, err := g.authenticate(r)
	if err != nil {
		g.refuse(w, r, Caller{}, err)
		return nil, false
	}
	caller := direct
	if claimed := r.Header.Values(HeaderCaller); len(claimed) > 0 {
		r.Header.Del(HeaderCaller)
		if direct.Kind != CallerManager {
			g.log.Warn("ignoring caller header from a caller that is not a manager",
				"caller", direct.String(), "method", r.Method, "path", r.URL.Path)
		} else if caller, err = parseCallerHeader(claimed); err != nil {
			g.refuse(w, r, direct, err)
			return nil, false
		}
	}
	if need := routeAccess(pattern); !need.allows(caller) {
		if need == accessNone {
			g.log.Error("route has no permission; refused to everyone", "pattern", pattern)
		}
		g.refuse(w, r, caller, fmt.Errorf("%w: %s may not %s %s: it needs %s", ErrForbidden, caller, r.Method, r.URL.Path, need))
		return nil, false
	}
	return r.WithContext(ContextWithCaller(r.Context(), caller)), true
}

// authenticate asks the Authenticator who sent r, and refuses a caller of a
// kind it cannot name.
func (g *guard) authenticate(r *http.Request) (Caller, error) {
	c, err := g.auth.Authenticate(r)
	if err != nil {
		return Caller{}, err
	}
	if !knownKind(c.Kind) || c.Name == "" {
		return Caller{}, fmt.Errorf("%w: the authenticator named no caller (kind %q, name %q)", ErrUnauthenticated, c.Kind, c.Name)
	}
	return normalize(c), nil
}

// parseCallerHeader reads the Caller a forwarding manager names.
func parseCallerHeader(vv []string) (Caller, error) {
	if len(vv) != 1 {
		return Caller{}, &ValidationError{Msg: fmt.Sprintf("%s given %d times; a forwarding manager sends it once", HeaderCaller, len(vv))}
	}
	var c Caller
	dec := json.NewDecoder(strings.NewReader(vv[0]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Caller{}, &ValidationError{Msg: fmt.Sprintf("%s is not a JSON caller {\"Kind\",\"Name\",\"Role\"}: %v", HeaderCaller, err)}
	}
	if !knownKind(c.Kind) || c.Name == "" {
		return Caller{}, &ValidationError{Msg: fmt.Sprintf("%s names kind %q and name %q; want a kind of manager, worker, client or token, and a name", HeaderCaller, c.Kind, c.Name)}
	}
	return normalize(c), nil
}

// refuse answers a refused request and logs it, once: 401 for
// ErrUnauthenticated, 403 for ErrForbidden, 400 for a malformed caller
// header; an Authenticator failing otherwise (its token table unavailable)
// is logged as an error and answered with its own status.
func (g *guard) refuse(w http.ResponseWriter, r *http.Request, c Caller, err error) {
	who := "no caller"
	if c.Kind != "" {
		who = c.String()
	}
	status := StatusOf(err)
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="cube"`)
		g.log.Warn("request refused", "caller", who, "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	case http.StatusForbidden, http.StatusBadRequest:
		g.log.Warn("request refused", "caller", who, "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	default:
		g.log.Error("authentication failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeError(w, err)
}

// checkReporter refuses a report that its caller may not make: only the
// worker a report names may send it. With security off the caller is
// anonymous and any report is taken, as before.
func checkReporter(c Caller, t Task, path string) error {
	switch {
	case c.Kind == CallerAnonymous:
		return nil
	case c.Kind != CallerWorker:
		return fmt.Errorf("%w: %s may not POST %s: it needs %s", ErrForbidden, c, path, accessWorker)
	case c.Name != t.Worker:
		return fmt.Errorf("%w: %s may not POST %s for worker %q: a worker reports only its own tasks", ErrForbidden, c, path, t.Worker)
	}
	return nil
}

// redactedValue replaces every Env value a read-only caller receives.
const redactedValue = "<redacted>"

// taskFor returns t as the caller of ctx may see it: Env values redacted
// ("KEY=<redacted>") for any caller without role submit or operator, which
// are the roles that could have set them. The stored task is not touched.
func taskFor(ctx context.Context, t Task) Task {
	if c, ok := CallerFrom(ctx); ok && (c.Role == RoleSubmit || c.Role == RoleOperator) {
		return t
	}
	if len(t.Env) == 0 {
		return t
	}
	env := make([]string, len(t.Env))
	for i, e := range t.Env {
		if k, _, ok := strings.Cut(e, "="); ok {
			env[i] = k + "=" + redactedValue
		} else {
			env[i] = redactedValue
		}
	}
	t.Env = env
	return t
}

// tasksFor is taskFor for a list; it copies the list only when it redacts.
func tasksFor(ctx context.Context, ts []Task) []Task {
	if c, ok := CallerFrom(ctx); ok && (c.Role == RoleSubmit || c.Role == RoleOperator) {
		return ts
	}
	out := make([]Task, len(ts))
	for i, t := range ts {
		out[i] = taskFor(ctx, t)
	}
	return out
}

// routeMux is a ServeMux that remembers the patterns registered on it, so
// that a test can check each against the permission table.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func newRouteMux() *routeMux { return &routeMux{ServeMux: http.NewServeMux()} }

// HandleFunc registers fn for pattern, as http.ServeMux.HandleFunc does.
func (m *routeMux) HandleFunc(pattern string, fn func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(fn))
}

// Handle registers h for pattern, as http.ServeMux.Handle does.
func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}
