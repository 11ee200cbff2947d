package api

import (
	"strings"
	"testing"
)

func TestParseConstraint(t *testing.T) {
	labels := map[string]string{"zone": "a", "disk": "ssd"}
	for _, tc := range []struct {
		in    string
		want  string
		holds bool
	}{
		{"zone==a", "zone==a", true},
		{" zone == b ", "zone==b", false},
		{"disk!=hdd", "disk!=hdd", true},
		{"disk!=ssd", "disk!=ssd", false},
		{"rack!=1", "rack!=1", true}, // a worker without the key
		{"rack==1", "rack==1", false},
	} {
		c, err := ParseConstraint(tc.in)
		if err != nil {
			t.Fatalf("ParseConstraint(%q): %v", tc.in, err)
		}
		if c.String() != tc.want || c.Holds(labels) != tc.holds {
			t.Errorf("ParseConstraint(%q) = %s holds %v, want %s holds %v", tc.in, c, c.Holds(labels), tc.want, tc.holds)
		}
	}
	for _, bad := range []string{"", "zone", "zone=a", "==a", "zone==a==b", "zo ne==a", "zone!=a!"} {
		if _, err := ParseConstraint(bad); err == nil {
			t.Errorf("ParseConstraint(%q) accepted, want an error", bad)
		}
	}
}

func TestValidateService(t *testing.T) {
	ok := Service{Name: "web", Count: 3, Task: Task{Image: "cube-echo:latest"}, Constraints: []string{"zone==a"},
		Update: UpdatePolicy{MaxParallel: 2, MinHealthyTime: "1s", HealthyDeadline: "1m", AutoRevert: true}}
	if err := ValidateService(ok); err != nil {
		t.Fatalf("valid service refused: %v", err)
	}
	for name, mut := range map[string]func(*Service){
		"Name":            func(s *Service) { s.Name = "-web" },
		"Count":           func(s *Service) { s.Count = MaxServiceCount + 1 },
		"Count negative":  func(s *Service) { s.Count = -1 },
		"Image":           func(s *Service) { s.Task.Image = " " },
		"MaxParallel":     func(s *Service) { s.Update.MaxParallel = -1 },
		"MinHealthyTime":  func(s *Service) { s.Update.MinHealthyTime = "soon" },
		"HealthyDeadline": func(s *Service) { s.Update.HealthyDeadline = "-1s" },
		"Constraints":     func(s *Service) { s.Constraints = []string{"zone=a"} },
		"Prefer":          func(s *Service) { s.Prefer = []string{"disk"} },
	} {
		s := ok
		mut(&s)
		err := ValidateService(s)
		if err == nil {
			t.Errorf("%s: bad service accepted", name)
			continue
		}
		if field := strings.Fields(name)[0]; !strings.Contains(err.Error(), field) && name != "Count negative" {
			t.Errorf("%s: error %q does not name the field", name, err)
		}
	}
}
