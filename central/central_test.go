package central_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
)

func TestCentralAPI(t *testing.T) {
	ctx := context.Background()
	c, err := central.New(ctx, central.Config{Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	servertest.CheckRoutes(t, c.Shell().Spec(), c.Shell().REST.Routes())

	api := servertest.Client(t, c, servertest.AdminToken(t, c))
	if err := c.Subclouds.CreateSubcloud(ctx, central.Subcloud{Name: "site-sx", Shape: inventory.Simplex,
		Availability: central.Online, Management: central.Managed, DeployStatus: "complete", Status: central.StatusOK,
		Sync: map[string]central.SyncStatus{"images": central.InSync}}); err != nil {
		t.Fatal(err)
	}
	var list rest.List[central.Subcloud]
	if err := api.Do(ctx, http.MethodGet, "/v1/subclouds", nil, nil, &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("GET /v1/subclouds = %+v, %v", list, err)
	}
	var sc central.Subcloud
	if err := api.Do(ctx, http.MethodGet, "/v1/subclouds/site-sx", nil, nil, &sc); err != nil || sc.Shape != inventory.Simplex {
		t.Errorf("GET /v1/subclouds/site-sx = %+v, %v", sc, err)
	}
	if err := api.Do(ctx, http.MethodGet, "/v1/subclouds/site-zz", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("GET unknown subcloud = %v; want not found", err)
	}
}
