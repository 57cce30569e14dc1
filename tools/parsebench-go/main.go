// parsebench-go times the peers' line-protocol parsers on the same file and blocks as metricsd's ParseBench:
// VictoriaMetrics' influx.Rows.Unmarshal and InfluxDB 1.x's models.ParsePointsWithPrecision (Debian's Go
// sources). It prints one JSON object; scripts/bench-parse.sh runs it pinned to one core with GOMAXPROCS=1.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"time"

	vminflux "github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/influx"
	"github.com/influxdata/influxdb/models"
)

func main() {
	file := flag.String("file", "", "line-protocol file")
	parser := flag.String("parser", "vm", "vm or influx")
	runs := flag.Int("runs", 5, "timed runs")
	blockSize := flag.Int("block", 64<<10, "block size in bytes (split at newlines)")
	flag.Parse()
	data, err := os.ReadFile(*file)
	if err != nil {
		panic(err)
	}
	lines := bytes.Count(data, []byte{'\n'})
	var blocks [][]byte
	for start := 0; start < len(data); {
		end := start + *blockSize
		if end >= len(data) {
			end = len(data)
		} else {
			end = start + bytes.LastIndexByte(data[start:end], '\n') + 1
		}
		blocks = append(blocks, data[start:end])
		start = end
	}
	strBlocks := make([]string, len(blocks))
	for i, b := range blocks {
		strBlocks[i] = string(b)
	}
	now := time.Now()
	var rows vminflux.Rows
	pass := func() int {
		n := 0
		switch *parser {
		case "vm":
			for _, s := range strBlocks {
				rows.Unmarshal(s)
				n += len(rows.Rows)
			}
		case "influx":
			for _, b := range blocks {
				pts, err := models.ParsePointsWithPrecision(b, now, "n")
				if err != nil {
					panic(err)
				}
				n += len(pts)
			}
		default:
			panic("unknown parser")
		}
		return n
	}
	if got := pass(); got != lines { // sanity check before timing
		panic(fmt.Sprintf("parsed %d points, want %d", got, lines))
	}
	var seconds []float64
	var mallocs uint64
	for r := 0; r < *runs; r++ {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		pass()
		seconds = append(seconds, time.Since(t0).Seconds())
		runtime.ReadMemStats(&after)
		mallocs = after.Mallocs - before.Mallocs
	}
	sorted := append([]float64(nil), seconds...)
	sort.Float64s(sorted)
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"parser": *parser, "bytes": len(data), "lines": lines, "seconds": seconds,
		"median_seconds": sorted[len(sorted)/2], "mallocs_per_line": float64(mallocs) / float64(lines),
	})
}
