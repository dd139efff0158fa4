{{/*
The chart's name, "pgfleet" unless nameOverride says otherwise.
*/}}
{{- define "pgfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, else "<release>-<name>", or just the
release name when it already contains the chart name. At most 52 characters, so suffixes such
as "-metrics" and "-leader-election" still fit the 63 of a label or a DNS name.
*/}}
{{- define "pgfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "pgfleet.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "pgfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels on every resource.
*/}}
{{- define "pgfleet.labels" -}}
helm.sh/chart: {{ include "pgfleet.chart" . }}
{{ include "pgfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pgfleet
{{- end -}}

{{/*
Labels selecting the operator's pods (never change: a Deployment's selector is immutable).
*/}}
{{- define "pgfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "pgfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pgfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image references: "<repository>:<tag>", the tag defaulting to the chart's appVersion.
*/}}
{{- define "pgfleet.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "pgfleet.poolerImage" -}}
{{- printf "%s:%s" .Values.pooler.image.repository (default .Chart.AppVersion .Values.pooler.image.tag) -}}
{{- end -}}

{{/*
Checks of value combinations the schema cannot express; fail with a message saying what to
change.
*/}}
{{- define "pgfleet.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled: two operators without a leader would fight over the same objects" -}}
{{- end -}}
{{- end -}}
