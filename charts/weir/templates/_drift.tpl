{{- /*
The drift scores of docs/monitoring.md (section 3) in PromQL: the one place they are written.
The PrometheusRule records them (weir:drift_*), its alerts and the dashboard's drift panels read
the recorded series, and tests/prometheus checks, on a real Prometheus scraping real servers,
that they equal Weir's own core.drift.psi.

For one histogram (a feature's bins, an output's predicted classes or confidence bins) over
the window W, per revision:

  a_i = max(c_i / sum(c), 1e-4)   e_i = max(reference share_i, 1e-4)
  PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

where c_i is the increase of bin i's counter over W, summed over the revision's pods. A window
without rows has no PSI (0/0: NaN, which no alert fires on).

Arguments (a dict): counter, share (series names), key (the label naming the histogram:
feature or output), bin (the label naming the bin: bin or class), window.
*/ -}}
{{- define "weir.drift.by" -}}
namespace, model, revision, {{ .key }}
{{- end }}

{{- define "weir.drift.observed" -}}
clamp_min(sum by ({{ include "weir.drift.by" . }}, {{ .bin }}) (increase({{ .counter }}[{{ .window }}])) / ignoring ({{ .bin }}) group_left sum by ({{ include "weir.drift.by" . }}) (increase({{ .counter }}[{{ .window }}])), 1e-4)
{{- end }}

{{- define "weir.drift.expected" -}}
clamp_min(max by ({{ include "weir.drift.by" . }}, {{ .bin }}) ({{ .share }}), 1e-4)
{{- end }}

{{- define "weir.drift.psi" -}}
sum by ({{ include "weir.drift.by" . }}) (
  (
    {{ include "weir.drift.observed" . }}
    -
    {{ include "weir.drift.expected" . }}
  )
  *
  ln(
    {{ include "weir.drift.observed" . }}
    /
    {{ include "weir.drift.expected" . }}
  )
)
{{- end }}
