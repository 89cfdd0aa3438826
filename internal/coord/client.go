package coord

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/pki"
)

// Defaults of ClientConfig.
const (
	DefaultDialTimeout      = 5 * time.Second
	DefaultKeepAliveTime    = 10 * time.Second
	DefaultKeepAliveTimeout = 5 * time.Second
)

// ClientConfig configures a client of an etcd cluster.
type ClientConfig struct {
	// Endpoints are the members' client addresses, host:port or
	// https://host:port.
	Endpoints []string
	// TLS is the client's certificate (client usage) and the CA that
	// issued the members' certificates.
	TLS TLSFiles
	// DialTimeout bounds connecting to a member; KeepAliveTime is the idle
	// time after which the connection is probed and KeepAliveTimeout how
	// long a probe may go unanswered before the connection is dropped.
	// Zero means the Default values.
	DialTimeout      time.Duration
	KeepAliveTime    time.Duration
	KeepAliveTimeout time.Duration
	// Logger receives the etcd client's log lines at LogLevel and above
	// (nil LogLevel: errors only); nil Logger drops them.
	Logger   *slog.Logger
	LogLevel slog.Leveler
}

// Client is a connection to an etcd cluster, with Petrel's guarded writes,
// epochs and leases as methods. Plain reads, writes and watches go through
// Etcd().
type Client struct {
	etcd      *clientv3.Client
	closeOnce sync.Once
	closeErr  error
}

// NewClient makes a client of the cluster at cfg.Endpoints. It connects
// lazily: a member that is down or refuses the certificate shows up as an
// error of the first request.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("coord: client: no endpoints")
	}
	if err := cfg.TLS.validate("client"); err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("coord: client certificate: %w", err)
	}
	pool, err := pki.CertPool(cfg.TLS.CAFile)
	if err != nil {
		return nil, fmt.Errorf("coord: client: %w", err)
	}
	eps := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		if !strings.Contains(ep, "://") {
			ep = "https://" + ep
		}
		eps[i] = ep
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: eps,
		TLS: &tls.Config{
			Certificates: []tls.Certificate{pair},
			RootCAs:      pool,
			MinVersion:   tls.VersionTLS12,
		},
		DialTimeout:          orDefault(cfg.DialTimeout, DefaultDialTimeout),
		DialKeepAliveTime:    orDefault(cfg.KeepAliveTime, DefaultKeepAliveTime),
		DialKeepAliveTimeout: orDefault(cfg.KeepAliveTimeout, DefaultKeepAliveTimeout),
		Logger:               newZapLogger(cfg.Logger, cfg.LogLevel, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("coord: client: %w", err)
	}
	return &Client{etcd: cli}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Etcd is the underlying etcd client, for plain reads, writes and watches.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// Close closes the client; requests in flight fail. It can be called more
// than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if err := c.etcd.Close(); err != nil {
			c.closeErr = fmt.Errorf("coord: close client: %w", err)
		}
	})
	return c.closeErr
}
