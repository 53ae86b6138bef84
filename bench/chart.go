package main

import (
	"bytes"
	"fmt"
	"math"
	"sort"
)

var chartTitles = map[string]string{
	"mem":     "In-memory storage and transport",
	"durable": "Durable storage (fsync), in-memory transport",
	"tcp":     "In-memory storage, loopback TCP",
}

var chartColors = map[string]string{
	"raftgo":    "#1f77b4",
	"hashicorp": "#d62728",
	"etcd":      "#2ca02c",
}

// chart renders throughput against proposer count as an SVG: one panel
// per variant and command size, one line per library, log-scaled x axis.
func (rep *report) chart() []byte {
	type panel struct {
		v    *variantResult
		size int
	}
	var panels []panel
	for i := range rep.Variants {
		v := &rep.Variants[i]
		var sizes []int
		for _, w := range v.workloads() {
			if !containsInt(sizes, w.size) {
				sizes = append(sizes, w.size)
			}
		}
		for _, s := range sizes {
			panels = append(panels, panel{v, s})
		}
	}
	const (
		pw, ph           = 460, 300 // panel size
		ml, mr, mt, mb   = 70, 20, 40, 45
		cols             = 2
		legendH          = 30
		titleH           = 30
		fontFamily       = "font-family=\"sans-serif\""
		gridColor        = "#dddddd"
		axisColor        = "#333333"
		defaultLineColor = "#7f7f7f"
	)
	rows := (len(panels) + cols - 1) / cols
	width, height := cols*pw, titleH+legendH+max(rows, 1)*ph
	var b bytes.Buffer
	fmt.Fprintf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" %s font-size=\"12\">\n", width, height, width, height, fontFamily)
	fmt.Fprintf(&b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", width, height)
	fmt.Fprintf(&b, "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">Throughput (committed proposals/s, median of %d rounds) vs concurrent proposers, 3-node cluster</text>\n", width/2, rep.Rounds)
	// Legend.
	var names []string
	for i := range rep.Variants {
		for _, c := range rep.Variants[i].contenders() {
			if !has(names, c) {
				names = append(names, c)
			}
		}
	}
	x := 20
	for _, n := range names {
		label := n
		if n == "etcd" && rep.EtcdInflight > 0 {
			label = fmt.Sprintf("etcd raft (MaxInflightMsgs %d)", rep.EtcdInflight)
		} else if n == "hashicorp" {
			label = "hashicorp/raft"
		}
		fmt.Fprintf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>\n", x, titleH+12, x+24, titleH+12, color(n))
		fmt.Fprintf(&b, "<text x=\"%d\" y=\"%d\">%s</text>\n", x+30, titleH+16, label)
		x += 60 + 7*len(label)
	}
	for pi, p := range panels {
		ox := (pi % cols) * pw
		oy := titleH + legendH + (pi/cols)*ph
		x0, y0 := float64(ox+ml), float64(oy+ph-mb)
		x1, y1 := float64(ox+pw-mr), float64(oy+mt)
		var clients []int
		ymax := 0.0
		for _, r := range p.v.Results {
			if r.Size != p.size {
				continue
			}
			if !containsInt(clients, r.Clients) {
				clients = append(clients, r.Clients)
			}
			ymax = math.Max(ymax, r.Throughput)
		}
		sort.Ints(clients)
		if len(clients) == 0 || ymax == 0 {
			continue
		}
		ytop := niceCeil(ymax)
		lx := func(c int) float64 {
			lo, hi := math.Log2(float64(clients[0])), math.Log2(float64(clients[len(clients)-1]))
			if hi == lo {
				return (x0 + x1) / 2
			}
			return x0 + (math.Log2(float64(c))-lo)/(hi-lo)*(x1-x0)
		}
		ly := func(v float64) float64 { return y0 - v/ytop*(y0-y1) }
		fmt.Fprintf(&b, "<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\" font-weight=\"bold\">%s, %s commands</text>\n", (x0+x1)/2, oy+22, chartTitles[p.v.Name], sizeName(p.size))
		for i := 0; i <= 5; i++ {
			v := ytop * float64(i) / 5
			y := ly(v)
			fmt.Fprintf(&b, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x0, y, x1, y, gridColor)
			fmt.Fprintf(&b, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", x0-6, y+4, humanCount(v))
		}
		for _, c := range clients {
			xx := lx(c)
			fmt.Fprintf(&b, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"%s\"/>\n", xx, y0, xx, y1, gridColor)
			fmt.Fprintf(&b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", xx, y0+16, c)
		}
		fmt.Fprintf(&b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\"/>\n", x0, y0, x1, y0, axisColor)
		fmt.Fprintf(&b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\"/>\n", x0, y0, x0, y1, axisColor)
		fmt.Fprintf(&b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">concurrent proposers</text>\n", (x0+x1)/2, y0+34)
		fmt.Fprintf(&b, "<text transform=\"translate(%d %.0f) rotate(-90)\" text-anchor=\"middle\">ops/s</text>\n", ox+16, (y0+y1)/2)
		for _, n := range p.v.contenders() {
			var pts []string
			for _, c := range clients {
				if r := p.v.find(n, c, p.size); r != nil {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", lx(c), ly(r.Throughput)))
				}
			}
			if len(pts) == 0 {
				continue
			}
			fmt.Fprintf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" points=\"%s\"/>\n", color(n), joinSpace(pts))
			for _, pt := range pts {
				var px, py float64
				fmt.Sscanf(pt, "%f,%f", &px, &py)
				fmt.Fprintf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", px, py, color(n))
			}
		}
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

func color(name string) string {
	if c, ok := chartColors[name]; ok {
		return c
	}
	return "#7f7f7f"
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func joinSpace(xs []string) string {
	var b bytes.Buffer
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(x)
	}
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func humanCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
