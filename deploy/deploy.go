// Package deploy ships the Ansible playbooks that bring up a Petrel site
// (deploy/ansible, docs/deploy.md) inside the petrel binary, so that
// central's deploy engine runs the very playbooks this binary was built
// with, and reads their values allow-list.
package deploy

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

//go:embed ansible
var files embed.FS

// Playbook is the playbook's file name inside the extracted tree.
const Playbook = "bootstrap.yml"

// FS is the playbook tree (bootstrap.yml, roles/, vars/, filter_plugins/).
func FS() fs.FS {
	sub, _ := fs.Sub(files, "ansible")
	return sub
}

// Extract writes the playbook tree under dir (made 0700; files 0600, the
// tree is read by ansible-playbook as the same user) and returns dir.
func Extract(dir string) (string, error) {
	err := fs.WalkDir(FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := fs.ReadFile(FS(), p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
	return dir, err
}

// ValueSpec is one allowed key of a site's values (vars/schema.yml).
type ValueSpec struct {
	Kind     string   `json:"kind"`
	Required bool     `json:"required"`
	Values   []string `json:"values"`
	Min      *int     `json:"min"`
	Max      *int     `json:"max"`
}

// Schema is vars/schema.yml: the allow-lists of the values (`petrel:`)
// and of the secrets (`petrel_secrets:`).
type Schema struct {
	Values  map[string]ValueSpec `json:"petrel_schema"`
	Secrets map[string]ValueSpec `json:"petrel_secrets_schema"`
}

// LoadSchema reads the embedded vars/schema.yml.
func LoadSchema() (Schema, error) {
	b, err := fs.ReadFile(FS(), "vars/schema.yml")
	if err != nil {
		return Schema{}, err
	}
	var s Schema
	err = yaml.UnmarshalStrict(b, &s)
	return s, err
}
