package coord

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// TLSFiles names the PEM files of one party's mutual TLS: its certificate
// and key, and the CA that must have issued the other side's certificate.
type TLSFiles struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

func (f TLSFiles) validate(what string) error {
	if f.CertFile == "" || f.KeyFile == "" || f.CAFile == "" {
		return fmt.Errorf("coord: %s: CertFile, KeyFile and CAFile are required", what)
	}
	return nil
}

// Defaults of MemberConfig.
const (
	DefaultTickMs              = 100
	DefaultElectionMs          = 1000
	DefaultQuotaBytes          = 256 << 20
	DefaultCompactionRetention = time.Hour
	DefaultReadyTimeout        = time.Minute
	DefaultClusterToken        = "petrel"
)

// MemberConfig configures one embedded etcd member.
type MemberConfig struct {
	// Name is the member's name, unique in its cluster.
	Name string
	// DataDir holds the member's data; it is created (or chmod-ed) 0700.
	// A restart with the same DataDir keeps the data and the membership.
	DataDir string
	// PeerAddr and ClientAddr are the host:port the member listens on for
	// the other members and for clients; it advertises the same addresses,
	// so they must be the host's own (not a wildcard).
	PeerAddr   string
	ClientAddr string
	// InitialCluster maps each member's name to its PeerAddr (host:port)
	// for forming a new cluster; nil means this member alone. It is read
	// only on the first start (a DataDir without data).
	InitialCluster map[string]string
	// ClusterToken tells apart clusters formed from the same addresses;
	// zero means DefaultClusterToken.
	ClusterToken string
	// JoinExisting joins a running cluster (to which this member was
	// added) instead of forming a new one.
	JoinExisting bool
	// TLS serves both client and peer traffic, each side required to
	// present a certificate from TLS.CAFile. The certificate is used as a
	// server and (towards the other members) as a client certificate, so
	// it needs both usages (pki.CA.IssuePeer) and the PeerAddr and
	// ClientAddr hosts as SANs.
	TLS TLSFiles
	// TickMs is the raft heartbeat interval and ElectionMs the election
	// timeout; zero means 100 and 1000 (tests use 10 and 100). Every member
	// of a cluster must use the same values. The minimum lease TTL is
	// 1.5 × ElectionMs, rounded up to a second.
	TickMs     uint
	ElectionMs uint
	// QuotaBytes bounds the backend database; past it the cluster only
	// serves reads and deletes (etcd raises a NOSPACE alarm). Zero means
	// DefaultQuotaBytes.
	QuotaBytes int64
	// CompactionRetention is how much key history is kept: older revisions
	// are compacted periodically. Zero means DefaultCompactionRetention.
	CompactionRetention time.Duration
	// ReadyTimeout bounds StartMember's wait for the member to join its
	// cluster and serve, when ctx has no earlier deadline. Zero means
	// DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives etcd's log lines at LogLevel and above (nil LogLevel:
	// errors only); nil Logger drops them.
	Logger   *slog.Logger
	LogLevel slog.Leveler
}

func (c *MemberConfig) validate() error {
	if c.Name == "" || c.DataDir == "" {
		return errors.New("coord: member: Name and DataDir are required")
	}
	for _, a := range []string{c.PeerAddr, c.ClientAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("coord: member %s: address %q: %w", c.Name, a, err)
		}
	}
	if c.InitialCluster != nil && c.InitialCluster[c.Name] != c.PeerAddr {
		return fmt.Errorf("coord: member %s: InitialCluster must map it to its PeerAddr %s", c.Name, c.PeerAddr)
	}
	return c.TLS.validate("member " + c.Name)
}

func (c *MemberConfig) setDefaults() {
	if c.InitialCluster == nil {
		c.InitialCluster = map[string]string{c.Name: c.PeerAddr}
	}
	if c.ClusterToken == "" {
		c.ClusterToken = DefaultClusterToken
	}
	if c.TickMs == 0 {
		c.TickMs = DefaultTickMs
	}
	if c.ElectionMs == 0 {
		c.ElectionMs = DefaultElectionMs
	}
	if c.QuotaBytes == 0 {
		c.QuotaBytes = DefaultQuotaBytes
	}
	if c.CompactionRetention == 0 {
		c.CompactionRetention = DefaultCompactionRetention
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
}

// Member is a running embedded etcd member.
type Member struct {
	name      string
	clientURL string
	etcd      *embed.Etcd
	muted     *atomic.Bool
	closeOnce sync.Once
}

// StartMember starts an etcd member and waits until it has joined its
// cluster and serves clients, within ctx and cfg.ReadyTimeout. The members
// of a new multi-member cluster must be started concurrently: none is
// ready before a quorum of them runs. On error nothing is left running.
func StartMember(ctx context.Context, cfg MemberConfig) (*Member, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("coord: member %s: %w", cfg.Name, err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("coord: member %s: %w", cfg.Name, err)
	}
	client := httpsURL(cfg.ClientAddr)
	m := &Member{name: cfg.Name, clientURL: client.String(), muted: new(atomic.Bool)}
	e, err := embed.StartEtcd(m.etcdConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("coord: start member %s: %w", cfg.Name, err)
	}
	m.etcd = e
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	if err := m.Ready(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Member) etcdConfig(cfg MemberConfig) *embed.Config {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	peer, client := httpsURL(cfg.PeerAddr), httpsURL(cfg.ClientAddr)
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	ec.InitialCluster = initialCluster(cfg.InitialCluster)
	ec.InitialClusterToken = cfg.ClusterToken
	ec.ClusterState = embed.ClusterStateFlagNew
	if cfg.JoinExisting {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	tls := transport.TLSInfo{
		CertFile:       cfg.TLS.CertFile,
		KeyFile:        cfg.TLS.KeyFile,
		TrustedCAFile:  cfg.TLS.CAFile,
		ClientCertAuth: true,
	}
	ec.ClientTLSInfo, ec.PeerTLSInfo = tls, tls
	ec.TickMs, ec.ElectionMs = cfg.TickMs, cfg.ElectionMs
	ec.QuotaBackendBytes = cfg.QuotaBytes
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = cfg.CompactionRetention.String()
	// Petrel speaks gRPC only; the JSON gateway would also dial the member
	// itself with its certificate.
	ec.EnableGRPCGateway = false
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(cfg.Logger, cfg.LogLevel, m.muted))
	return ec
}

func httpsURL(hostport string) url.URL { return url.URL{Scheme: "https", Host: hostport} }

// initialCluster renders the name=URL list etcd wants, sorted by name.
func initialCluster(members map[string]string) string {
	parts := make([]string, 0, len(members))
	for name, addr := range members {
		u := httpsURL(addr)
		parts = append(parts, name+"="+u.String())
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// Ready waits until the member has joined its cluster and serves clients.
// It fails with ErrStopped if the member stops first, or with ctx's error.
func (m *Member) Ready(ctx context.Context) error {
	select {
	case <-m.etcd.Server.ReadyNotify():
		return nil
	case <-m.etcd.Server.StopNotify():
		return fmt.Errorf("coord: member %s: %w", m.name, ErrStopped)
	case <-ctx.Done():
		return fmt.Errorf("coord: member %s not ready: %w", m.name, ctx.Err())
	}
}

// Done is closed when the member's server has stopped: after Close, or
// when etcd stops it (say, because it was removed from the cluster).
func (m *Member) Done() <-chan struct{} { return m.etcd.Server.StopNotify() }

// Err receives the errors that stopped one of the member's listeners
// from serving; its owner should then Close the member and start it again.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Name is the member's name.
func (m *Member) Name() string { return m.name }

// ClientURL is the URL clients reach the member at (https://host:port).
func (m *Member) ClientURL() string { return m.clientURL }

// Close stops the member and waits until it has stopped; the data stays
// in DataDir. It can be called more than once.
func (m *Member) Close() {
	m.closeOnce.Do(func() {
		// Shutting down, etcd logs its closing listeners as errors.
		m.muted.Store(true)
		m.etcd.Close()
		<-m.etcd.Server.StopNotify()
	})
}
