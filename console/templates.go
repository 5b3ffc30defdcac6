package console

import (
	"html/template"
	"strconv"
)

// pages are the templates under templates/, each executed inside
// layout.html (login.html has its own frame).
var pages = []string{"overview", "clients", "rules", "audit", "record", "explain", "certificates", "message"}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"itoa": strconv.Itoa,
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		t, err := template.New(p).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, err
		}
		out[p] = t
	}
	t, err := template.New("login").Funcs(funcs).ParseFS(assets, "templates/login.html")
	if err != nil {
		return nil, err
	}
	out["login"] = t
	return out, nil
}
