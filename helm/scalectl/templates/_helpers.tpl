{{/*
Names, labels and connection details shared by the templates. Every name here matches
cli/kube/src/meta.rs, and tests/helm_chart.rs holds the chart's output equal to
`scalectl render --target kubernetes` for every level.
*/}}

{{- define "scalectl.labels" -}}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shop
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
scalectl.dev/environment: {{ .Release.Name }}
{{- end }}

{{/* A pod template's labels: nothing that changes with the chart's version (that would
restart every pod on an upgrade), matching scalectl's (cli/kube/src/meta.rs pod_labels). */}}
{{- define "scalectl.podLabels" -}}
app.kubernetes.io/part-of: shop
scalectl.dev/environment: {{ .Release.Name }}
{{- end }}

{{/* A shop pool's Deployment and Service: `shop` for the monolith, `shop-<role>`. */}}
{{- define "scalectl.shopName" -}}
{{- if eq . "all" }}shop{{ else }}shop-{{ . }}{{ end }}
{{- end }}

{{/* "true" when the shop reads from replicas (and there are some). */}}
{{- define "scalectl.replicaReads" -}}
{{- and .Values.shop.readFromReplicas (gt (int .Values.postgres.instances) 1) }}
{{- end }}

{{- define "scalectl.writesHost" -}}
{{- if .Values.pooler.enabled }}db-main-pooler-rw{{ else }}db-main-rw{{ end }}
{{- end }}

{{- define "scalectl.readsHost" -}}
{{- if .Values.pooler.enabled }}db-main-pooler-ro{{ else }}db-main-ro{{ end }}
{{- end }}

{{/* The database credentials from the operator's Secret, then DATABASE_URL to the host given. */}}
{{- define "scalectl.databaseEnv" -}}
- name: DB_USER
  valueFrom:
    secretKeyRef:
      name: db-main-app
      key: username
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: db-main-app
      key: password
- name: DATABASE_URL
  value: postgres://$(DB_USER):$(DB_PASSWORD)@{{ . }}:5432/shop
{{- end }}

{{/* What `shop serve` and `shop worker` share. */}}
{{- define "scalectl.longRunningEnv" -}}
- name: SHOP_LOG_FORMAT
  value: json
- name: SHOP_REDIS_PREFIX
  value: {{ printf "%s:" .Release.Name | quote }}
{{ include "scalectl.databaseEnv" (include "scalectl.writesHost" .) }}
{{- if and .Values.pooler.enabled (eq .Values.pooler.mode "transaction") }}
- name: SHOP_DB_POOLER
  value: transaction
{{- end }}
{{- if .Values.redis.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: redis-auth
      key: password
- name: REDIS_URL
  value: redis://:$(REDIS_PASSWORD)@redis:6379/
{{- end }}
{{- end }}

{{- /* What a container asks for: a role's cpu, cpuLimit and memory (memory as both
request and limit) where its values size it, else 250m, 256Mi and a 512Mi limit; as
cli/kube/src/shop.rs's `resources`. Takes a role from .Values.shop.roles, or an empty dict. */ -}}
{{- define "scalectl.resources" -}}
resources:
  requests:
    cpu: {{ .cpu | default .cpuLimit | default "250m" }}
    memory: {{ .memory | default "256Mi" }}
  limits:
    {{- with .cpuLimit }}
    cpu: {{ . }}
    {{- end }}
    memory: {{ .memory | default "512Mi" }}
{{- end }}

{{- /* Image, resources (of the role in .pool, when given) and security context. */ -}}
{{- define "scalectl.container" -}}
image: {{ .Values.image }}
{{ include "scalectl.resources" (.pool | default dict) }}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
{{- end }}

{{/* The path prefixes each role serves (app/src/http.rs; cli/kube/src/edge.rs). */}}
{{- define "scalectl.prefixes" -}}
{{- $table := dict "all" (list "/") "auth" (list "/register" "/login" "/logout" "/me") "catalog" (list "/shops" "/products") "cart" (list "/cart") "orders" (list "/checkout" "/orders" "/returns") "flash" (list "/flash-sales") -}}
{{- get $table . | toJson }}
{{- end }}
