//go:build !race

package main

// raceEnabled is true when the tests run under the race detector; the
// end-to-end tests then build the kvexample binary with it too.
const raceEnabled = false
