package realollama_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/deepersensor/deepersensor/internal/realollama"
)

func TestFindModel(t *testing.T) {
	tests := []struct {
		name   string
		shared string // the folder, under the root, that holds shared/models; "" for none
		want   bool
	}{
		{"beside the checkout", "work", true},
		{"further up", ".", true},
		{"nowhere", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			// A checkout in root/work/ci-check, and the test's folder in it.
			checkout := filepath.Join(root, "work", "ci-check", "internal", "realollama")
			if err := os.MkdirAll(checkout, 0o755); err != nil {
				t.Fatal(err)
			}
			var want string
			if tt.shared != "" {
				models := filepath.Join(root, tt.shared, "shared", "models")
				if err := os.MkdirAll(models, 0o755); err != nil {
					t.Fatal(err)
				}
				want = filepath.Join(models, realollama.ModelFile)
				if err := os.WriteFile(want, []byte("GGUF"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := realollama.FindModel(checkout)
			if tt.want && (err != nil || got != want) {
				t.Errorf("FindModel = %q, %v; want %q", got, err, want)
			}
			if !tt.want && err == nil {
				t.Errorf("FindModel = %q, want an error", got)
			}
		})
	}
}
