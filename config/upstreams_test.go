package config_test

import (
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/config"
)

func TestLogValueMasksUpstreamKeys(t *testing.T) {
	t.Setenv("DS_UPSTREAMS", "gpu=openai+https://proxy-user:hunter2@gpu-box/v1")
	t.Setenv("DS_UPSTREAM_GPU_API_KEY", "sk-very-secret")
	t.Setenv("DS_MODEL_FALLBACKS", "gpu/big=gpu/small")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	logged := c.LogValue().String()
	if strings.Contains(logged, "sk-very-secret") || strings.Contains(logged, "hunter2") {
		t.Errorf("logged configuration leaks a secret: %s", logged)
	}
	if !strings.Contains(logged, "gpu=openai+https://proxy-user:xxxxx@gpu-box/v1 (api key [masked])") || !strings.Contains(logged, "gpu/big=gpu/small") {
		t.Errorf("logged configuration does not show the upstreams and fallbacks: %s", logged)
	}
	if s := c.Upstreams[0].String(); strings.Contains(s, "sk-very-secret") {
		t.Errorf("an upstream prints its key: %s", s)
	}
}
