// Package testkit holds the helpers the tests of every package share: a
// logger that writes to the test's log and goes quiet when the test ends,
// waits with a deadline, and free loopback addresses to listen on.
//
// It is a leaf: it imports none of Cube's packages, so the tests of any of
// them, and the cluster helpers in package test, can use it without an
// import cycle.
package testkit
