# -*- test-case-name: tests.test_admin,tests.test_dashboard,tests.test_metrics -*-
"""
The admin site: the JSON API, the dashboard and the Prometheus metrics.

  - L{jsonapi}: errors (L{jsonapi.AdminError}), reading and checking JSON
    bodies, writing JSON answers;
  - L{routes}: the paths (twisted.web's resource tree): one
    L{routes.Endpoint} per API path, JSON 404s;
  - L{api}: the root resource, C{/api/status}, C{/api/switch},
    C{/api/check} and the token check;
  - L{site}: the site and its requests (body size limit, idle timeout);
  - L{dashboard}: C{GET /} (C{dashboard.html}) and C{/api/events};
  - L{metrics}: C{GET /metrics};
  - L{token}: the token file, read by the service and the CLI alike.

C{/api/flags} and C{/api/sync} are mounted by their components
(L{bluegreen.flags.api}, L{bluegreen.sync.api}) with L{routes.Endpoint}.
"""
