{{/* Chart name, overridable with nameOverride. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, or "<release>-<name>" (just "<release>"
when it already contains the name). Truncated to 63 characters (DNS label).
*/}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "weir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods (immutable in the Deployment's selector). */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The standard labels on every object of the chart. */}}
{{- define "weir.labels" -}}
helm.sh/chart: {{ include "weir.chart" . }}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weir
{{- end }}

{{/* Name of the ServiceAccount the operator runs as. */}}
{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the RBAC objects. Cluster-scoped names carry the release namespace, so two releases
of the same name in different namespaces (e.g. one operator per team, each watching its own
namespaces) do not collide.
*/}}
{{- define "weir.rbacName" -}}
{{- printf "%s-%s" .Release.Namespace (include "weir.fullname" .) }}
{{- end }}

{{/* The operator image: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "weir.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/* The inference servers' default image: serverImage, or the operator's own image. */}}
{{- define "weir.serverImage" -}}
{{- default (include "weir.image" .) .Values.serverImage }}
{{- end }}

{{/*
RBAC rules, kept equal to RULES in operator/weir_operator/cluster/permissions.py by
tests/chart/test_chart.py. Namespaced resources go into a Role per watched namespace (or the
ClusterRole when watching all namespaces); cluster-scoped ones always into the ClusterRole.
*/}}
{{- define "weir.rules.namespaced" -}}
# The custom resource: watched; kopf's progress annotations patched.
- apiGroups: ["serving.weir.dev"]
  resources: ["modeldeployments"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["serving.weir.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# Children, read from watches, applied with create-or-merge-patch; old revisions deleted.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# `<md>-shadow`: what the stable's servers mirror in a shadow step (watched like the other
# children, only those labelled managed-by weir; its owner reference removes it).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
# Pods are only watched: readiness, restarts and crash loops of the servers.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Secrets are only read, one by name: the ca.crt of spec.server.tls.secretName, to verify
# TLS servers with. Never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events that tell each rollout's story in `kubectl describe md`.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# kopf: peering between operator replicas that watch namespaces.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}

{{- define "weir.rules.cluster" -}}
# kopf: cluster-wide peering, discovery of watched namespaces and of the CRD.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end }}
