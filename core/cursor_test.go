package core_test

import (
	"testing"

	"github.com/deepersensor/deepersensor/core"
)

func TestPositionCursor(t *testing.T) {
	for _, pos := range []int64{1, 42, 1 << 62} {
		got, err := core.ParsePositionCursor("before", core.PositionCursor(pos))
		if err != nil || got != pos {
			t.Errorf("round trip of %d = %d, %v", pos, got, err)
		}
	}
	for _, bad := range []string{"", "!!", core.PositionCursor(0), core.PositionCursor(-3), "bm90IGEgbnVtYmVy"} {
		_, err := core.ParsePositionCursor("before", bad)
		if e, ok := err.(*core.Error); !ok || e.Code != core.Malformed || e.Field != "before" {
			t.Errorf("ParsePositionCursor(%q) = %v, want a malformed before", bad, err)
		}
	}
}

func TestTextCursor(t *testing.T) {
	for _, key := range []string{"ada@example.com", "ünïcode@example.com"} {
		got, err := core.ParseTextCursor("cursor", core.TextCursor(key))
		if err != nil || got != key {
			t.Errorf("round trip of %q = %q, %v", key, got, err)
		}
	}
	for _, bad := range []string{"", "!!", core.TextCursor(""), core.TextCursor("a\x00b"), core.TextCursor("\xff")} {
		_, err := core.ParseTextCursor("cursor", bad)
		if e, ok := err.(*core.Error); !ok || e.Code != core.Malformed || e.Field != "cursor" {
			t.Errorf("ParseTextCursor(%q) = %v, want a malformed cursor", bad, err)
		}
	}
}
