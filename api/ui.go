package api

import "net/http"

// UIPath roots the web page of the cluster on every manager's API (package
// ui serves it; ManagerHandlerOptions.UI mounts it).
const UIPath = "/ui/"

// Patterns of the page's routes.
const (
	patternUI   = "GET " + UIPath
	patternRoot = "GET /{$}"
)

// registerUI mounts the web page under UIPath and redirects / to it, when
// page is set. Both routes are open (managerRoutes): the page is static
// files that hold no data; the script in it reads the cluster through this
// same API with the token a person gives it, and each of those calls is
// admitted like any other.
func registerUI(mux *routeMux, page http.Handler) {
	if page == nil {
		return
	}
	mux.Handle(patternUI, page)
	mux.HandleFunc(patternRoot, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, UIPath, http.StatusFound)
	})
}
