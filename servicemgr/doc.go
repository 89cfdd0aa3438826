// Package servicemgr keeps a site's services running through host
// failures, as StarlingX's service manager does (brief §3 item 4): service
// groups with the redundancy models N+M, N and 1+1, their members placed
// on eligible hosts, promoted only once a failed member's host is
// confirmed fenced or dead, and every assignment carrying its group's
// epoch (a fencing token kept in etcd) so that no stale actor can act.
package servicemgr
