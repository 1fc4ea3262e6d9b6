package tests

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/catalogd/catalogd"

// layout is DESIGN.md's "may import" column: for each package (and the
// packages below it), the module's own packages it may import directly.
// Packages not listed (server, tests) may import anything.
var layout = map[string][]string{
	"api/catalogpb": {},
	"consensus":     {"api/catalogpb"},
	"lease":         {"api/catalogpb"},
	"registry":      {"api/catalogpb", "lease"},
	"lineage":       {"api/catalogpb", "registry"},
	"locks":         {"api/catalogpb", "lease"},
	"placement":     {},
	"search":        {"api/catalogpb", "registry", "lineage"},
	"federation":    {"api/catalogpb"},
	"sdk":           {"api/catalogpb"},
	"cmd/catctl":    {"api/catalogpb", "sdk"},
	"cmd/catalogd":  {"server"},
}

// domain packages hold replicated state and are driven by the server: they
// never reach for the network themselves.
var domain = []string{"lease", "registry", "lineage", "locks", "placement"}

// clientSide may not depend on server-side code even indirectly.
var clientSide = []string{"sdk", "cmd/catctl"}

type listedPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []listedPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps=false", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// owner returns the layout entry that pkg (module-relative) falls under.
func owner(pkg string) (string, bool) {
	for dir := range layout {
		if pkg == dir || strings.HasPrefix(pkg, dir+"/") {
			return dir, true
		}
	}
	return "", false
}

func within(pkg string, dirs []string) bool {
	for _, d := range dirs {
		if pkg == d || strings.HasPrefix(pkg, d+"/") {
			return true
		}
	}
	return false
}

// TestLayout fails the build when a package imports what DESIGN.md's layout
// table does not allow.
func TestLayout(t *testing.T) {
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		dir, ok := owner(rel)
		if !ok {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/") {
				target := strings.TrimPrefix(imp, module+"/")
				if _, same := owner(target); !within(target, layout[dir]) && !(same && strings.HasPrefix(target, dir)) {
					t.Errorf("%s imports %s; DESIGN.md allows %s only %v of this module", rel, target, dir, layout[dir])
				}
				continue
			}
			if within(dir, domain) && (within(imp, []string{"google.golang.org/grpc", "net/http", "net/rpc"})) {
				t.Errorf("%s imports %s; domain packages never do network I/O (DESIGN.md)", rel, imp)
			}
			if dir == "placement" && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				t.Errorf("placement imports %s; it may use the standard library only", imp)
			}
		}
	}
}

// TestClientSideHasNoServerCode keeps sdk and catctl free of server-side
// packages even through other packages (DESIGN.md).
func TestClientSideHasNoServerCode(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go tool is not in PATH")
	}
	for _, pkg := range clientSide {
		out, err := exec.Command(goTool, "list", "-deps", module+"/"+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			rel, ok := strings.CutPrefix(dep, module+"/")
			if ok && rel != pkg && !within(rel, []string{"api/catalogpb", "sdk"}) {
				t.Errorf("%s depends on %s; it may use only sdk and api", pkg, rel)
			}
		}
	}
}
