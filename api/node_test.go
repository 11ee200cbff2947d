package api

import "testing"

func TestNode_Equal(t *testing.T) {
	a := Node{Name: "w1", Cpu: 2, Allows: []string{"privileged"}}
	b := a
	b.Allows = []string{"privileged"}
	if !a.Equal(b) {
		t.Error("equal nodes differ")
	}
	b.Allows = []string{"cap:NET_ADMIN"}
	if a.Equal(b) {
		t.Error("nodes allowing different things are equal")
	}
	c, d := Node{Name: "w1"}, Node{Name: "w1", Allows: []string{}}
	if !c.Equal(d) {
		t.Error("nil and empty Allows differ")
	}
	d.Cpu = 1
	if c.Equal(d) {
		t.Error("nodes of different capacity are equal")
	}
}
