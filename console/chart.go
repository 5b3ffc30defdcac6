package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

// chartSVG draws per-minute counts (oldest first, ending at now) as an
// inline SVG bar chart: drawn on the server, no script, nothing fetched.
// Minutes are summed into 5-minute bars so that 24 hours fit 288 bars.
func chartSVG(title string, perMinute []int, now time.Time, color string) template.HTML {
	const (
		w, h        = 880, 160
		left, right = 44, 24
		top, bottom = 10, 22
		group       = 5
	)
	bars := make([]int, (len(perMinute)+group-1)/group)
	for i, v := range perMinute {
		bars[i/group] += v
	}
	peak := 0
	for _, v := range bars {
		peak = max(peak, v)
	}
	scale := niceCeil(peak)
	plotW, plotH := float64(w-left-right), float64(h-top-bottom)
	bw := plotW / float64(len(bars))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		w, h, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<title>%s</title>`, template.HTMLEscapeString(title))
	// Grid lines and the y axis: 0, half, the scale.
	for _, f := range []float64{0, 0.5, 1} {
		y := float64(top) + plotH*(1-f)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, left, y, w-right, y)
		if f == 0.5 && scale%2 != 0 {
			continue // no fractional label
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="10" text-anchor="end" fill="#555">%d</text>`, left-4, y+3, int(float64(scale)*f))
	}
	for i, v := range bars {
		if v == 0 {
			continue
		}
		bh := plotH * float64(v) / float64(scale)
		x := float64(left) + float64(i)*bw
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.2f" height="%.1f" fill="%s"><title>%d</title></rect>`,
			x, float64(top)+plotH-bh, max(bw-0.3, 0.5), bh, color, v)
	}
	// Hour labels every 3 hours, in UTC like the log.
	start := now.Add(-time.Duration(len(perMinute)) * time.Minute)
	for hh := 0; hh <= 24; hh += 3 {
		t := start.Add(time.Duration(hh) * time.Hour)
		x := float64(left) + plotW*float64(hh)/24
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle" fill="#555">%s</text>`, x, h-6, t.UTC().Format("15:04"))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#555">per 5 min, UTC</text>`, w-right, top+10)
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // built from numbers and escaped text only
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(n int) int {
	if n <= 1 {
		return 1
	}
	p := 1
	for p*10 <= n {
		p *= 10
	}
	for _, m := range []int{1, 2, 5, 10} {
		if m*p >= n {
			return m * p
		}
	}
	return 10 * p
}
