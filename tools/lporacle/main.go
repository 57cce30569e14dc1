// lporacle runs InfluxDB 1.x's own line-protocol parser (models.ParsePointsWithPrecision, from Debian's
// golang-github-influxdb-influxdb-dev) over stdin and prints the same canonical JSON as `metricsd parse`, so the
// two can be compared line by line. It is a test tool: it is built by `make test` and never shipped.
//
// Framing is the same as `metricsd parse`: split on '\n', strip one trailing '\r', skip blank lines and lines whose
// first non-whitespace byte is '#'. Each remaining line goes to InfluxDB's parser on its own. A line counts as
// accepted only when InfluxDB parses it AND can read its fields back (Point.Fields()), with at least one field —
// the same checks influxd makes before it stores a point.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/influxdata/influxdb/models"
)

type field struct {
	Type  string      `json:"type"`
	Value interface{} `json:"value"`
}

func main() {
	precision := flag.String("precision", "ns", "ns, us, ms, s, m or h")
	flag.Parse()
	// influxd 1.6 builds with unsigned support behind a flag; metricsd always accepts 'u' integers.
	models.EnableUintSupport()
	influxPrecision := map[string]string{"ns": "n", "n": "n", "us": "u", "u": "u", "ms": "ms", "s": "s", "m": "m", "h": "h"}[*precision]
	if influxPrecision == "" {
		fmt.Fprintln(os.Stderr, "bad precision")
		os.Exit(2)
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		panic(err)
	}
	lines := bytes.Split(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] == '\n' {
		lines = lines[:len(lines)-1]
	}
	// Two different default times tell whether a line carried its own timestamp.
	t1 := time.Unix(0, 1111111111111111111).UTC()
	t2 := time.Unix(0, 2222222222222222222).UTC()
	out := bytes.Buffer{}
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	for i, line := range lines {
		n := i + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		j := 0
		for j < len(line) && (line[j] == ' ' || line[j] == '\t' || line[j] == 0) {
			j++
		}
		if j == len(line) || line[j] == '#' {
			continue
		}
		reject := func(msg string) {
			enc.Encode(map[string]interface{}{"line": n, "error": msg})
		}
		pts, err := models.ParsePointsWithPrecision(append([]byte(nil), line...), t1, influxPrecision)
		if err != nil {
			reject(err.Error())
			continue
		}
		if len(pts) != 1 {
			reject(fmt.Sprintf("parsed into %d points", len(pts)))
			continue
		}
		p := pts[0]
		fields, err := p.Fields()
		if err != nil {
			reject(err.Error())
			continue
		}
		if len(fields) == 0 {
			reject("point without fields")
			continue
		}
		pts2, err := models.ParsePointsWithPrecision(append([]byte(nil), line...), t2, influxPrecision)
		var ts interface{}
		if err == nil && len(pts2) == 1 && pts2[0].Time().Equal(p.Time()) {
			ts = p.Time().UnixNano()
		}
		tags := map[string]string{}
		for _, t := range p.Tags() {
			tags[string(t.Key)] = string(t.Value)
		}
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fs := map[string]field{}
		for _, k := range keys {
			switch v := fields[k].(type) {
			case float64:
				fs[k] = field{"float", v}
			case int64:
				fs[k] = field{"integer", v}
			case uint64:
				fs[k] = field{"unsigned", v}
			case string:
				fs[k] = field{"string", v}
			case bool:
				fs[k] = field{"boolean", v}
			default:
				fs[k] = field{fmt.Sprintf("%T", v), fmt.Sprint(v)}
			}
		}
		enc.Encode(map[string]interface{}{
			"line": n, "measurement": string(p.Name()), "tags": tags, "fields": fs, "time": ts,
		})
	}
	os.Stdout.Write(out.Bytes())
}
