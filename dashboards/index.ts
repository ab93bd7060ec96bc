// dashboards/ — HTTP API, live push, web app, camera live view, Grafana dashboards.
export { createDashboardServer, buildDashboardApp, SESSION_COOKIE, CSRF_HEADER, type DashboardServer, type RouteInfo } from './server.ts';
export { ROUTE_SCOPES, type RouteSpec, type RouteScope, type LiveLimits } from './routes.ts';
export { seedUser, hashPassword, verifyPassword, ROLES, UserInputError, type Role, type User, type SeedUserInput } from './auth.ts';
export { PERMISSIONS, can, type Permission } from './access.ts';
export { ALERT_CHANNEL, type AlertChange } from './live.ts';
export type { DashboardServerOptions, DashboardStore, DashboardAlerting, DashboardExtras, CommandSenderLike } from './types.ts';
export { createRulesService, type RulesService, type RulesLib, type RuleLike } from './rules-api.ts';
export { createCameraService, nearestCamera, type CameraService, type CameraRef } from './cameras.ts';
