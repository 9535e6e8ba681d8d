{{/*
Naming and labels shared by every template. Names are truncated to 63 characters, the limit of
a DNS label and of a label value.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every namespaced and cluster-scoped object: fullnameOverride, else the release
name when it already contains the chart name (`helm install weft …` gives "weft"), else
"<release>-<chart>".
*/}}
{{- define "weft.fullname" -}}
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

{{/* The operator's objects: "<fullname>-operator". */}}
{{- define "weft.operator.fullname" -}}
{{- printf "%s-operator" (include "weft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The uninstall hook's objects: "<fullname>-uninstall". */}}
{{- define "weft.uninstall.fullname" -}}
{{- printf "%s-uninstall" (include "weft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "weft-0.1.0", for the helm.sh/chart label. */}}
{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart renders. */}}
{{- define "weft.labels" -}}
helm.sh/chart: {{ include "weft.chart" . }}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "weft.operator.labels" -}}
{{ include "weft.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator pods' selector: stable across upgrades (no version, no chart label). */}}
{{- define "weft.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "weft.operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weft.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "weft.operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The agent image handed to the operator. */}}
{{- define "weft.agent.image" -}}
{{- printf "%s:%s" .Values.agent.image.repository (.Values.agent.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Checks across values that the JSON schema cannot express. */}}
{{- define "weft.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: two operators without a leader would fight over the agent DaemonSet" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail "metrics.port and health.port must differ" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled=true" }}
{{- end }}
{{- end }}

{{/* The `helm test` objects: "<fullname>-test". */}}
{{- define "weft.test.fullname" -}}
{{- printf "%s-test" (include "weft.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The kubectl image of the hooks. */}}
{{- define "weft.kubectl.image" -}}
{{- printf "%s:%s" .Values.kubectl.image.repository .Values.kubectl.image.tag }}
{{- end }}
