package sdk

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports fails when the client depends on a server-side package of this
// module, or on a third-party module beyond gRPC and protobuf.
func TestImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	allowed := []string{
		"github.com/catalogd/catalogd/api/catalogpb",
		"github.com/catalogd/catalogd/sdk",
		"google.golang.org/grpc",
		"google.golang.org/protobuf",
		"google.golang.org/genproto/googleapis/rpc",
		"golang.org/x/net",
		"golang.org/x/sys",
		"golang.org/x/text",
	}
	for _, pkg := range strings.Fields(string(out)) {
		ok := false
		for _, prefix := range allowed {
			if pkg == prefix || strings.HasPrefix(pkg, prefix+"/") {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("sdk depends on %s; it may use only api/catalogpb, grpc, protobuf and genproto", pkg)
		}
	}
}
