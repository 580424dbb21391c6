package server

import (
	"context"

	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/provider"
)

// ListModels implements GET /v1/models.
func (s *Server) ListModels(ctx context.Context, _ apiserver.ListModelsRequestObject) (apiserver.ListModelsResponseObject, error) {
	models, err := s.provider.ListModels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]apiserver.ModelInfo, len(models))
	for i, m := range models {
		out[i] = toAPIModel(m)
	}
	return apiserver.ListModels200JSONResponse{Models: out}, nil
}

// GetModel implements GET /v1/models/{name}.
func (s *Server) GetModel(ctx context.Context, req apiserver.GetModelRequestObject) (apiserver.GetModelResponseObject, error) {
	d, err := s.provider.ShowModel(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	m := toAPIModel(d.Model)
	details := apiserver.GetModel200JSONResponse{
		Name: m.Name, Size: m.Size, ModifiedAt: m.ModifiedAt, Family: m.Family, ParameterSize: m.ParameterSize,
		QuantizationLevel: m.QuantizationLevel, Format: d.Format, Families: nonNil(d.Families),
		Parameters: d.Parameters, Capabilities: nonNil(d.Capabilities),
	}
	if d.ContextLength > 0 {
		details.ContextLength = &d.ContextLength
	}
	return details, nil
}

func toAPIModel(m provider.Model) apiserver.ModelInfo {
	return apiserver.ModelInfo{
		Name: m.Name, Size: m.Size, ModifiedAt: m.ModifiedAt, Family: m.Family, ParameterSize: m.ParameterSize,
		QuantizationLevel: m.QuantizationLevel,
	}
}

// nonNil makes a nil list an empty one, which the contract requires.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
