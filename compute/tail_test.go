package compute

import "testing"

func TestTailLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 2, ""},
		{"\n\n", 2, ""},
		{"a\nb\nc\n", 0, "a\nb\nc\n"},
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 9, "a\nb\nc\n"},
		{"only", 1, "only\n"},
	} {
		if got := tailLines([]byte(tc.in), tc.n); got != tc.want {
			t.Errorf("tailLines(%q, %d) = %q; want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
