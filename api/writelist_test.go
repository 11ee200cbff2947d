package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
)

// writeJSONList writes, one item at a time, the bytes writeJSON writes for
// the whole slice: an empty list is [] (never null), HTML is escaped alike.
func TestWriteJSONList_SameBytesAsWriteJSON(t *testing.T) {
	var tasks []Task
	for i := range 3 {
		tasks = append(tasks, Task{ID: uuid.New(), Name: "web-<&>", Image: "cube-echo:latest", State: Running,
			Env: []string{"HTML=<b>&</b>", `Q="x"`}, SubmitTime: time.Date(2026, 12, 2, 10, i, 0, 0, time.UTC)})
	}
	for _, c := range []struct {
		name  string
		tasks []Task
	}{{"three", tasks}, {"one", tasks[:1]}, {"empty", []Task{}}, {"nil", nil}} {
		t.Run(c.name, func(t *testing.T) {
			got, want := httptest.NewRecorder(), httptest.NewRecorder()
			writeJSONList(got, http.StatusOK, c.tasks)
			whole := c.tasks
			if whole == nil {
				whole = []Task{} // what listTasks answered for no task
			}
			writeJSON(want, http.StatusOK, whole)
			if got.Body.String() != want.Body.String() {
				t.Fatalf("writeJSONList wrote\n%s\nwant\n%s", got.Body, want.Body)
			}
			if got.Code != http.StatusOK || got.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, Content-Type %q", got.Code, got.Header().Get("Content-Type"))
			}
		})
	}
}
