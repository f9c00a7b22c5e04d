package graceful

import (
	"fmt"
	"strconv"
	"strings"
)

// The protocol between a process and a child it starts, a successor or a
// worker, on the control socket pair they share: one line per message.
//
//	child  → parent  "ready <pid>"            listeners open, signals handled: it may be told to go
//	parent → child   "go"                     accept now
//	child  → parent  "serving"                accepting: the parent may stop
//	worker → master  "beat <inflight> <total>" a heartbeat, with request counts
//	worker → master  "svc <i> <inflight> <total>" after a beat: service i's counts (Service.Begin)
//	master → worker  "drain"                  drain and exit
//	master → worker  "drain restart"          drain, run the OnRestart hooks, exit
//	master → worker  "stop"                   not ready; ShutdownDelay; drain and exit
//
// A master and its workers can run different releases during a phased
// restart, so the wire form never changes; new kinds may be added.
type msgKind uint8

const (
	msgReady msgKind = iota + 1
	msgGo
	msgBeat
	msgDrain
	msgReplace
	msgStop
	msgServing
	msgSvcBeat
)

var msgWords = [...]string{msgReady: "ready", msgGo: "go", msgBeat: "beat", msgDrain: "drain", msgReplace: "drain restart", msgStop: "stop", msgServing: "serving", msgSvcBeat: "svc"}

// message is one line of the protocol.
type message struct {
	kind     msgKind
	pid      int    // msgReady
	inflight int64  // msgBeat, msgSvcBeat
	total    uint64 // msgBeat, msgSvcBeat
	idx      int    // msgSvcBeat: the service's place among the process's services
}

// String is the message's wire form, without the newline.
func (m message) String() string {
	switch m.kind {
	case msgReady:
		return "ready " + strconv.Itoa(m.pid)
	case msgBeat:
		return "beat " + strconv.FormatInt(m.inflight, 10) + " " + strconv.FormatUint(m.total, 10)
	case msgSvcBeat:
		return "svc " + strconv.Itoa(m.idx) + " " + strconv.FormatInt(m.inflight, 10) + " " + strconv.FormatUint(m.total, 10)
	}
	if int(m.kind) < len(msgWords) && m.kind != 0 {
		return msgWords[m.kind]
	}
	return "?"
}

// parseMessage decodes one line, with or without its newline.
func parseMessage(line string) (message, error) {
	line = strings.TrimSuffix(line, "\n")
	word, rest, _ := strings.Cut(line, " ")
	bad := func() (message, error) { return message{}, fmt.Errorf("unexpected message %q", line) }
	switch word {
	case "ready":
		pid, err := strconv.Atoi(rest)
		if err != nil || pid <= 0 || strconv.Itoa(pid) != rest {
			return bad()
		}
		return message{kind: msgReady, pid: pid}, nil
	case "beat":
		in, tot, ok := counts(rest)
		if !ok {
			return bad()
		}
		return message{kind: msgBeat, inflight: in, total: tot}, nil
	case "svc":
		i, rest, _ := strings.Cut(rest, " ")
		idx, err := strconv.Atoi(i)
		in, tot, ok := counts(rest)
		if err != nil || idx < 0 || idx >= maxListeners || strconv.Itoa(idx) != i || !ok {
			return bad()
		}
		return message{kind: msgSvcBeat, idx: idx, inflight: in, total: tot}, nil
	}
	for k, w := range msgWords {
		if w != "" && w == line && msgKind(k) != msgReady && msgKind(k) != msgBeat && msgKind(k) != msgSvcBeat {
			return message{kind: msgKind(k)}, nil
		}
	}
	return bad()
}

// counts parses "<inflight> <total>", each in its one decimal form.
func counts(s string) (int64, uint64, bool) {
	a, b, ok := strings.Cut(s, " ")
	in, err1 := strconv.ParseInt(a, 10, 64)
	tot, err2 := strconv.ParseUint(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || in < 0 || strconv.FormatInt(in, 10) != a || strconv.FormatUint(tot, 10) != b {
		return 0, 0, false
	}
	return in, tot, true
}
