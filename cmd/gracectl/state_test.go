//go:build unix

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/gograceful/graceful"
)

// TestOurs: the restart a signal led to is one begun after the state was
// read before the signal, or the one then under way, which it joins; never
// one that was over already, nor one of the other kind.
func TestOurs(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	t1 := t0.Add(time.Second)
	done := &graceful.RestartStatus{Kind: "hot", Started: t0, Finished: t0.Add(time.Millisecond)}
	underWay := &graceful.RestartStatus{Kind: "hot", Started: t0}
	later := &graceful.RestartStatus{Kind: "hot", Started: t1, Finished: t1.Add(time.Millisecond)}
	phased := &graceful.RestartStatus{Kind: "phased", Started: t1}
	for _, c := range []struct {
		name   string
		lr     *graceful.RestartStatus
		before *graceful.RestartStatus
		want   bool
	}{
		{"none yet", nil, nil, false},
		{"first", later, nil, true},
		{"the one over before", done, done, false},
		{"a later one", later, done, true},
		{"the one under way, joined", done, underWay, true},
		{"another kind", phased, done, false},
	} {
		if got := ours(c.lr, "hot", &graceful.State{LastRestart: c.before}); got != c.want {
			t.Errorf("%s: ours = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestBusy: a restart of one kind is refused, before any signal, while
// one of the other kind is under way; one of the same kind is joined.
func TestBusy(t *testing.T) {
	phasedUnderWay := &graceful.State{LastRestart: &graceful.RestartStatus{Kind: "phased", Started: time.Now()}}
	err := busy("restart", 42, phasedUnderWay)
	if err == nil || !strings.Contains(err.Error(), "pid 42 is in a phased restart") || !strings.Contains(err.Error(), "nothing sent") {
		t.Errorf("restart during a phase: %v", err)
	}
	if err := busy("phased-restart", 42, phasedUnderWay); err != nil {
		t.Errorf("phased-restart during a phase: %v", err)
	}
	if err := busy("restart", 42, nil); err != nil {
		t.Errorf("no state: %v", err)
	}
}
