package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/lab/vbmc"
)

// A bare machine (`petrel lab add-machine NAME --bare`) is a lab host with
// nothing installed: its own site's namespaces (it is to become a new
// site's controller-0), a cgroup, an empty software root and a chassis
// whose "operating system" is an sshd inside the host's namespace and
// cgroup, the Ansible target. The root namespace reaches the sshd only
// through a forwarder on 127.0.0.0/8 (the machine's own fabric process),
// with a key the lab makes; passwords are refused. DIR/machines/NAME holds
// what an operator needs: inventory.ini, values.yml and secrets.yml for
// deploy/ansible, deploy.yml for central's deploy engine, the SSH key and
// known_hosts. The machine is registered at central as subcloud NAME
// (simplex, with bootstrap values), not deployed.

// MachineEntry is a bare machine in lab.json.
type MachineEntry struct {
	Name         string            `json:"name"`
	Dir          string            `json:"dir"`           // DIR/machines/NAME
	SoftwareRoot string            `json:"software_root"` // DIR/hosts/NAME/controller-0
	Netns        string            `json:"netns"`
	Addresses    map[string]string `json:"addresses"`
	SSH          string            `json:"ssh"`      // HOST:PORT on 127.0.0.0/8: the forwarder to its sshd
	SiteURL      string            `json:"site_url"` // the forwarder to its site API, once deployed
	BMC          BMCEntry          `json:"bmc"`
}

// Files of a bare machine's directory.
const (
	MachineInventory = "inventory.ini"
	MachineValues    = "values.yml"
	MachineSecrets   = "secrets.yml"
	MachineDeploy    = "deploy.yml"
	MachineKey       = "id_ed25519"
	MachineKnown     = "known_hosts"
	machineSSHPort   = 22
)

// sshdPath is Debian openssh-server's daemon.
const sshdPath = "/usr/sbin/sshd"

// AddMachine adds a bare machine to a running lab and returns its entry once
// its sshd answers through the forwarder.
func AddMachine(ctx context.Context, dir, name, binary string) (MachineEntry, error) {
	f, err := Load(dir)
	if err != nil {
		return MachineEntry{}, err
	}
	if err := inventory.ValidateSiteName("machine", name); err != nil {
		return MachineEntry{}, err
	}
	if slices.ContainsFunc(f.Sites, func(s SiteEntry) bool { return s.Name == name }) ||
		slices.ContainsFunc(f.Machines, func(m MachineEntry) bool { return m.Name == name }) {
		return MachineEntry{}, fmt.Errorf("lab: %s is already a site or machine of the lab in %s", name, f.Dir)
	}
	for _, tool := range []string{sshdPath, "ssh-keygen", "ansible-playbook", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			return MachineEntry{}, fmt.Errorf("lab: add-machine needs %s (Debian openssh-server, ansible-core): %w", tool, err)
		}
	}
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return MachineEntry{}, err
		}
	}
	siteIdx := len(f.Sites) + len(f.Machines)
	prefix := prefixFor(f.Dir)
	hn, err := hostnet.New(hostnet.Config{Prefix: prefix})
	if err != nil {
		return MachineEntry{}, err
	}
	const hostName = "controller-0"
	host, err := hn.AddHost(ctx, name, hostName, siteIdx, 0)
	if err != nil {
		return MachineEntry{}, err
	}
	gw, siteNS, err := hn.EnsureGateway(ctx, name, siteIdx)
	if err != nil {
		return MachineEntry{}, err
	}
	bmcAddr, _, err := hn.EnsureBMC(ctx, name, siteIdx, 0)
	if err != nil {
		return MachineEntry{}, err
	}
	p := pathsOf(f.Dir, name, hostName)
	mdir := filepath.Join(f.Dir, "machines", name)
	for _, d := range []string{p.rootDir(), filepath.Join(mdir, "os"), filepath.Join(mdir, "os", "root")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return MachineEntry{}, err
		}
	}
	bcfg, be, err := prepareBMC(f.Dir, p, bmcAddr, siteNS)
	if err != nil {
		return MachineEntry{}, err
	}
	mgmt := host.Addr(hostnet.Mgmt)
	sshd, err := prepareSSHD(ctx, mdir, name, hostName, mgmt)
	if err != nil {
		return MachineEntry{}, err
	}
	// The chassis boots the OS (sshd); once Ansible has installed petrel
	// it also boots the slot's host-init, as the deploy's control script
	// runs it (same pid file).
	if err := writeYAML(p.f("vbmc.yaml"), vbmc.Config{Prefix: prefix, Site: name, Host: hostName, SiteIndex: siteIdx,
		HostIndex: 0, SoftwareRoot: p.rootDir(), Boot: []string{"host-init", "--config", p.f("host.yaml"), "--pid-file", p.f("run/host-init.pid")},
		BootDelayMS: 200, Socket: p.f("vbmc.sock"), BMC: bcfg, SoftOffTimeoutMS: 5000,
		OS: [][]string{machineOS(mdir, sshd)}}); err != nil {
		return MachineEntry{}, err
	}
	if _, err := startProcess(f.Dir, binary, "vbmc-"+name+"-"+hostName, "vbmc", "--config", p.f("vbmc.yaml")); err != nil {
		return MachineEntry{}, err
	}
	// Its fabric: SSH and the site API in from 127.x, the WAN out to central.
	centralSite, err := centralSiteTarget(f.Dir)
	if err != nil {
		return MachineEntry{}, err
	}
	sshListen, apiListen, err := machineListeners(siteIdx)
	if err != nil {
		return MachineEntry{}, err
	}
	wan := netJoin(gw.String(), WANPort)
	fab := FabricConfig{Routes: []Route{
		{Name: name + "-ssh", Listen: sshListen, Netns: siteNS, Target: netJoin(mgmt.String(), machineSSHPort)},
		{Name: name + "-api", Listen: apiListen, Netns: siteNS, Target: netJoin(mgmt.String(), SiteAPIPort)},
		{Name: name + "-wan", Outbound: true, Listen: wan, Netns: siteNS, Target: centralSite},
	}}
	if err := writeYAML(filepath.Join(mdir, "fabric.yaml"), fab); err != nil {
		return MachineEntry{}, err
	}
	if _, err := startProcess(f.Dir, binary, "fabric-"+name, "lab", "fabric", "--config", filepath.Join(mdir, "fabric.yaml")); err != nil {
		return MachineEntry{}, err
	}
	hostKey, err := waitSSH(ctx, sshListen, filepath.Join(mdir, "os", "ssh_host_ed25519_key.pub"), 20*time.Second)
	if err != nil {
		return MachineEntry{}, fmt.Errorf("lab: machine %s: %w; its console ends:\n%s", name, err, tail(p.f("console.log"), 8))
	}
	ap, _ := netip.ParseAddrPort(sshListen)
	if err := atomicfile.Write(filepath.Join(mdir, MachineKnown), []byte(fmt.Sprintf("[%s]:%d %s\n", ap.Addr(), ap.Port(), hostKey)), 0o600); err != nil {
		return MachineEntry{}, err
	}
	m := MachineEntry{Name: name, Dir: mdir, SoftwareRoot: p.rootDir(), Netns: host.Netns(),
		Addresses: map[string]string{"mgmt": mgmt.String(), "cluster": host.Addr(hostnet.Cluster).String(), "gateway": gw.String()},
		SSH:       sshListen, SiteURL: "https://" + apiListen, BMC: be}
	if err := registerMachine(ctx, f, m, binary, wan); err != nil {
		return MachineEntry{}, err
	}
	f.Machines = append(f.Machines, m)
	return m, f.save()
}

// machineListeners picks the forwarders' addresses: SSH on a 127.x address
// of the machine's own (its bootstrap address at central, unique in the
// fleet), the site API on 127.0.0.1.
func machineListeners(siteIdx int) (ssh, api string, err error) {
	addr := netip.AddrFrom4([4]byte{127, 88, byte(siteIdx), 10})
	sshPort, err := freePortOn(addr.String())
	if err != nil {
		return "", "", err
	}
	apiPort, err := freePort()
	if err != nil {
		return "", "", err
	}
	return netJoin(addr.String(), sshPort), netJoin("127.0.0.1", apiPort), nil
}

func freePortOn(addr string) (int, error) {
	for {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if handOut("tcp", port) {
			return port, nil
		}
	}
}

// centralSiteTarget is central's site listener, as the lab's fabric routes
// sites to it.
func centralSiteTarget(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "fabric.yaml"))
	if err != nil {
		return "", err
	}
	var fc FabricConfig
	if err := yaml.Unmarshal(b, &fc); err != nil {
		return "", err
	}
	for _, r := range fc.Routes {
		if r.Outbound {
			return r.Target, nil
		}
	}
	return "", errors.New("lab: the fabric has no WAN route to central")
}

// prepareSSHD makes the machine's SSH identity and the lab's client key,
// and writes sshd's configuration: key-based root login only, on the
// machine's mgmt address. It returns the configuration's path.
func prepareSSHD(ctx context.Context, mdir, site, host string, mgmt netip.Addr) (string, error) {
	osDir := filepath.Join(mdir, "os")
	for _, k := range []string{filepath.Join(osDir, "ssh_host_ed25519_key"), filepath.Join(mdir, MachineKey)} {
		if _, err := os.Stat(k); err == nil {
			continue
		}
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "petrel-lab-"+site, "-f", k).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("lab: ssh-keygen: %w: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(mdir, MachineKey+".pub"))
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(filepath.Join(osDir, "authorized_keys"), pub, 0o600); err != nil {
		return "", err
	}
	// sshd's privilege separation directory (Debian's unit makes it).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return "", err
	}
	conf := strings.Join([]string{
		"# petrel lab: the Ansible target of bare machine " + site,
		"ListenAddress " + netJoin(mgmt.String(), machineSSHPort),
		"HostKey " + filepath.Join(osDir, "ssh_host_ed25519_key"),
		"PidFile " + filepath.Join(osDir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(osDir, "authorized_keys"),
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"HostbasedAuthentication no",
		"PermitEmptyPasswords no",
		"UsePAM no",
		// The lab's directories may sit under a test's temporary directory.
		"StrictModes no",
		"UseDNS no",
		"PrintMotd no",
		"X11Forwarding no",
		"AllowTcpForwarding no",
		"MaxStartups 30",
		// Every session knows it is in the lab: the agent's real platform
		// refuses to run.
		"SetEnv PETREL_LAB_HOST=" + site + "/" + host,
		"Subsystem sftp internal-sftp",
		"",
	}, "\n")
	path := filepath.Join(osDir, "sshd_config")
	if err := atomicfile.Write(path, []byte(conf), 0o600); err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, sshdPath, "-t", "-f", path).CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: sshd -t: %w: %s", err, out)
	}
	return path, nil
}

// machineOS is the bare machine's "operating system": its sshd, in a
// mount namespace of its own where /root is the machine's (DIR/machines/
// NAME/os/root), not the build machine's. A root login on the build
// machine may run anything from its ~/.bashrc (here: pyenv, a second per
// command); a bare machine has none of it, and Ansible's remote temporary
// files stay in the lab's directory. Everything started over SSH (the
// deploy's host-init) inherits that namespace; it ends with the host.
func machineOS(mdir, sshdConfig string) []string {
	return []string{"unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `mount --bind "$0" /root && exec "$@"`, filepath.Join(mdir, "os", "root"),
		sshdPath, "-D", "-e", "-f", sshdConfig}
}

// waitSSH waits until the sshd answers through the forwarder with its
// banner, and returns its public host key ("ssh-ed25519 AAAA…").
func waitSSH(ctx context.Context, addr, pubFile string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "SSH-2.0-") {
				pub, err := os.ReadFile(pubFile)
				if err != nil {
					return "", err
				}
				fields := strings.Fields(string(pub))
				if len(fields) < 2 {
					return "", fmt.Errorf("%s: not a public key", pubFile)
				}
				return fields[0] + " " + fields[1], nil
			}
			err = fmt.Errorf("no SSH banner (%v)", rerr)
		}
		last = err
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("sshd not answering at %s within %s: %v", addr, limit, last)
}

// registerMachine registers the machine at central as a simplex subcloud
// with its bootstrap address (the SSH forwarder's) and values, makes a
// one-time join token, and writes the files deploy/ansible and central's
// deploy engine take.
func registerMachine(ctx context.Context, f *File, m MachineEntry, binary, wan string) error {
	capi, err := client.New(client.Config{URL: f.Central.URL, CACert: f.CACert, Token: f.Central.Token})
	if err != nil {
		return err
	}
	mgmt := netip.MustParseAddr(m.Addresses["mgmt"])
	subnet := netip.PrefixFrom(mgmt, 24).Masked()
	gw := m.Addresses["gateway"]
	values := strings.Join([]string{
		"# petrel lab: bootstrap values of bare machine " + m.Name,
		"system_mode: simplex",
		"description: lab machine " + m.Name,
		"management_subnet: " + subnet.String(),
		"management_start_address: " + mgmt.String(),
		"management_gateway_address: " + gw,
		"external_oam_subnet: " + subnet.String(),
		"external_oam_gateway_address: " + gw,
		"external_oam_floating_address: " + mgmt.String(),
		"systemcontroller_gateway_address: " + gw,
		"",
	}, "\n")
	if err := atomicfile.Write(filepath.Join(m.Dir, "bootstrap-values.yml"), []byte(values), 0o600); err != nil {
		return err
	}
	sshAddr, sshPortS, _ := net.SplitHostPort(m.SSH)
	sshPort, _ := strconv.Atoi(sshPortS)
	if err := capi.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{Name: m.Name,
		BootstrapAddress: sshAddr, BootstrapValues: values}, nil); err != nil {
		return fmt.Errorf("lab: register %s at central: %w", m.Name, err)
	}
	var tok central.IssuedJoinToken
	if err := capi.Do(ctx, http.MethodPost, "/v1/subclouds/"+m.Name+"/join-tokens", nil, central.JoinTokenRequest{TTLSeconds: 24 * 3600}, &tok); err != nil {
		return fmt.Errorf("lab: join token for %s: %w", m.Name, err)
	}
	secrets := filepath.Join(m.Dir, MachineSecrets)
	b, _ := yaml.Marshal(map[string]any{"petrel_secrets": map[string]string{"join_token": tok.Token, "bmc_password": m.BMC.Password}})
	if err := atomicfile.Write(secrets, b, 0o600); err != nil {
		return err
	}
	// What the lab sets beyond what central derives from the registration:
	// the machine's chassis is its BMC, as host management reaches it from
	// inside the site.
	labValues := map[string]any{"software_root": m.SoftwareRoot, "platform": "lab", "init": "host-init",
		"lab_chassis_socket": filepath.Join(m.SoftwareRoot, "vbmc.sock"), "central_site_address": wan,
		"bmc_type": m.BMC.Type, "bmc_ipmi": m.BMC.SiteIPMI, "bmc_redfish": m.BMC.SiteRedfish, "bmc_username": m.BMC.Username}
	vals := map[string]any{"site_name": m.Name, "shape": "simplex", "binary": binary, "secrets_file": secrets,
		"mgmt_address": mgmt.String(), "central_url": f.Central.URL, "central_ca_cert": f.CACert}
	for k, v := range labValues {
		vals[k] = v
	}
	b, _ = yaml.Marshal(map[string]any{"petrel": vals})
	if err := atomicfile.Write(filepath.Join(m.Dir, MachineValues), append([]byte("# petrel lab: site values of bare machine "+m.Name+" (deploy/ansible/vars/schema.yml)\n"), b...), 0o600); err != nil {
		return err
	}
	key, known := filepath.Join(m.Dir, MachineKey), filepath.Join(m.Dir, MachineKnown)
	inv := fmt.Sprintf("# petrel lab: bare machine %s, through its SSH forwarder\n[site]\n%s ansible_host=%s ansible_port=%d ansible_user=root ansible_ssh_private_key_file=%s ansible_ssh_common_args='-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes -o PasswordAuthentication=no'\n",
		m.Name, m.Name, sshAddr, sshPort, key, known)
	if err := atomicfile.Write(filepath.Join(m.Dir, MachineInventory), []byte(inv), 0o600); err != nil {
		return err
	}
	b, _ = yaml.Marshal(central.DeployOptions{SSHUser: "root", SSHPort: sshPort, SSHKeyFile: key, SSHKnownHostsFile: known,
		BMCPassword: m.BMC.Password, Values: labValues})
	return atomicfile.Write(filepath.Join(m.Dir, MachineDeploy), b, 0o600)
}
