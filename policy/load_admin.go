package policy

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/dicomedge/dicomedge/console/password"
)

var consoleRoles = []string{RoleViewer, RoleOperator}

// admin builds the admin block. The console is served on edge.admin_listen,
// so it needs one, and it needs at least one way in: client certificates
// (client_ca) or a user.
func (l *loader) admin(s *adminSchema, a *Admin, e *Edge) {
	if s == nil {
		return
	}
	cs := first(l, s.Console, "console")
	if cs == nil {
		return
	}
	c := &Console{ClientCA: l.paths(cs.ClientCA, "admin.console.client_ca")}
	if e.AdminListen == "" {
		l.errorf(cs.DefRange, "Console without admin_listen", "admin.console is served on edge.admin_listen; set it, e.g. admin_listen = \"127.0.0.1:9102\".")
	}
	if len(c.ClientCA) == 0 && len(cs.Users) == 0 {
		l.errorf(cs.DefRange, "Console without a way in", "admin.console needs client_ca (administrators' client certificates) or at least one user \"NAME\" block with a password_hash.")
	}
	seen := map[string]hcl.Range{}
	for _, u := range cs.Users {
		if u.Name == "" {
			l.errorf(u.NameRange, "Empty user name", "A console user needs a name, like user \"pacs-admin\".")
			continue
		}
		bad := false
		for _, r := range u.Name {
			if r < 0x21 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
				bad = true
			}
		}
		if bad || len(u.Name) > 64 {
			l.errorf(u.NameRange, "Invalid user name", "user %q: a console user name is 1 to 64 characters without spaces or control characters.", u.Name)
			continue
		}
		if prev, dup := seen[u.Name]; dup {
			l.errorf(u.NameRange, "Duplicate user name", "A console user named %q is already defined at %s.", u.Name, at(prev))
			continue
		}
		seen[u.Name] = u.NameRange
		cu := ConsoleUser{Name: u.Name, Role: RoleViewer}
		if v, ok := l.str(u.PasswordHash, ""); ok {
			if _, err := password.Parse(v.s); err != nil {
				l.errorf(v.rng, "Invalid password_hash", "user %q: %s.", u.Name, err)
			}
			cu.PasswordHash = v.s
		} else if u.PasswordHash == nil {
			l.errorf(u.DefRange, "Missing password_hash", "user %q needs password_hash = \"$argon2id$...\": run `dicomedge admin passwd` and paste what it prints.", u.Name)
		}
		if v, ok := l.str(u.Role, RoleViewer); ok && l.enum(v, "console role", consoleRoles) {
			cu.Role = v.s
		}
		c.Users = append(c.Users, cu)
	}
	a.Console = c
}
