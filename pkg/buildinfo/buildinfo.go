// Package buildinfo holds the version, commit and build date that the release
// build stamps into both binaries with -ldflags -X.
package buildinfo

import "runtime/debug"

// Set with -ldflags "-X github.com/kubectl-agent/kubectl-agent/pkg/buildinfo.Version=v1.2.3" and friends.
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

// Info is what `version -o json` prints.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	Date      string `json:"date,omitempty"`
	GoVersion string `json:"goVersion"`
}

// Get returns the stamped build information, falling back to what the Go
// toolchain recorded (go install builds carry a module version and VCS data).
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Date: Date}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info.GoVersion = bi.GoVersion
		if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && info.Commit == "":
				info.Commit = s.Value
			case s.Key == "vcs.time" && info.Date == "":
				info.Date = s.Value
			}
		}
	}
	return info
}
