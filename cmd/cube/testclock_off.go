//go:build !cubeclockjump

package main

// startTestClock does nothing in a production build; the clock-jump test
// build (tag cubeclockjump, testclock.go) follows CUBE_TEST_CLOCK_FILE.
func startTestClock() (stop func()) { return func() {} }
