package tcptransport

import "time"

// lazyDeadline sets a connection's read or write deadline only when the
// one in force is too near or too far. Setting a deadline updates a
// runtime timer, which per frame was a measurable part of a small
// message's cost; renewed lazily, an operation gets between timeout and
// 5/4 of it to make progress, never less.
type lazyDeadline struct {
	set   func(time.Time) error
	until time.Time // the deadline in force; zero if none set yet
}

// ensure makes the deadline in force lie between now+timeout and
// now+timeout*5/4.
func (d *lazyDeadline) ensure(now time.Time, timeout time.Duration) {
	if left := d.until.Sub(now); left >= timeout && left <= timeout+timeout/4 {
		return
	}
	d.until = now.Add(timeout + timeout/4)
	d.set(d.until)
}
