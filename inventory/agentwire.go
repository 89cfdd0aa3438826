package inventory

import "time"

// The agent<->site protocol: an agent joins with POST /v1/join, then
// reports with PUT /v1/agents/{uuid}/report over mutual TLS.

// JoinRequest is the body of POST /v1/join: an agent asks to join with a
// join token, its machine identity and a certificate request for a key it
// keeps.
type JoinRequest struct {
	JoinToken string `json:"join_token"`
	MachineID string `json:"machine_id"`
	CSR       string `json:"csr"` // PEM
}

// JoinResponse is the agent's identity at this site.
type JoinResponse struct {
	Host          Host     `json:"host"`
	Certificate   string   `json:"certificate"`    // PEM, CN = machine id, OU = site
	ServerCA      string   `json:"server_ca"`      // PEM: verifies the site's API
	ClientCA      string   `json:"client_ca"`      // PEM: the site's agent CA
	ReportPath    string   `json:"report_path"`    // where to send reports
	SiteName      string   `json:"site"`           // the site joined
	SoftwareSlots []string `json:"software_slots"` // reserved
}

// Report is what an agent sends: all of it at start (Full), then only what
// changed. Generation increases with every report of one boot.
type Report struct {
	Full            bool      `json:"full"`
	BootID          string    `json:"boot_id"`
	Generation      uint64    `json:"generation"`
	BootedAt        time.Time `json:"booted_at"`
	SoftwareVersion string    `json:"software_version,omitempty"`
	Hardware        *Hardware `json:"hardware,omitempty"`
}

// ReportAck tells the agent what the site holds; NeedFull asks for a full
// report (the site lost track of this boot).
type ReportAck struct {
	Generation uint64 `json:"generation"`
	NeedFull   bool   `json:"need_full"`
}
