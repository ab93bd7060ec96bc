// Texts of the web app: zh-CN first, English selectable. Dates always in Asia/Shanghai.
const TEXT = {
  'nav.alarms': ['告警', 'Alarms'],
  'nav.devices': ['设备', 'Devices'],
  'nav.rules': ['规则', 'Rules'],
  'nav.overview': ['概览', 'Overview'],
  logout: ['退出', 'Log out'],
  'live.on': ['实时', 'Live'],
  'live.off': ['未连接', 'Offline'],
  'login.title': ['登录校安', 'Log in to Xiaoan'],
  'login.username': ['用户名', 'Username'],
  'login.password': ['密码', 'Password'],
  'login.submit': ['登录', 'Log in'],
  'alarms.title': ['告警值班台', 'Alarm console'],
  'alarms.none': ['当前没有告警', 'No alarms'],
  'alarms.new': ['新告警', 'New alarm'],
  'filter.site': ['学校/区域', 'Site'],
  'filter.building': ['楼栋', 'Building'],
  'filter.category': ['类别', 'Category'],
  'filter.state': ['状态', 'State'],
  'filter.all': ['全部', 'All'],
  'filter.open': ['未解除', 'Open'],
  'filter.apply': ['筛选', 'Filter'],
  'category.emergency': ['应急', 'Emergency'],
  'category.hazard': ['隐患', 'Hazard'],
  'state.raised': ['待处置', 'Raised'],
  'state.acknowledged': ['已确认', 'Acknowledged'],
  'state.resolved': ['已解除', 'Resolved'],
  'state.cleared': ['已恢复', 'Cleared'],
  'severity.info': ['提示', 'Info'],
  'severity.minor': ['一般', 'Minor'],
  'severity.major': ['较重', 'Major'],
  'severity.critical': ['严重', 'Critical'],
  'severity.fatal': ['特别严重', 'Fatal'],
  drill: ['演练 DRILL', 'DRILL 演练'],
  'alarm.device': ['设备', 'Device'],
  'alarm.site': ['地点', 'Site'],
  'alarm.raisedAt': ['发生时间', 'Raised'],
  'alarm.value': ['数值', 'Value'],
  'alarm.ack': ['确认', 'Acknowledge'],
  'alarm.resolve': ['解除', 'Resolve'],
  'alarm.history': ['历史', 'History'],
  'alarm.camera': ['摄像头', 'Camera'],
  'alarm.comment': ['处置说明', 'Comment'],
  'alarm.commentPlaceholder': ['如：已到场查看，系演练', 'e.g. on site, it is a drill'],
  'alarm.submit': ['提交', 'Submit'],
  'alarm.cancel': ['取消', 'Cancel'],
  'alarm.by': ['处理人', 'By'],
  'alarm.escalated': ['已升级至', 'Escalated to'],
  'camera.snapshot': ['告警时抓拍', 'Snapshot at the alarm'],
  'camera.live': ['实时画面', 'Live view'],
  'camera.none': ['附近没有摄像头', 'No camera nearby'],
  'camera.close': ['关闭', 'Close'],
  'camera.noSnapshot': ['告警时未抓拍', 'No snapshot was taken'],
  'devices.title': ['设备', 'Devices'],
  'devices.id': ['编号', 'ID'],
  'devices.name': ['名称', 'Name'],
  'devices.profile': ['型号', 'Model'],
  'devices.state': ['状态', 'State'],
  'devices.lastSeen': ['最后上报', 'Last seen'],
  'devices.trouble': ['故障计数', 'Trouble'],
  'devices.gateway': ['网关', 'Gateway'],
  'devices.building': ['楼栋', 'Building'],
  'devices.room': ['房间', 'Room'],
  'devices.enrol': ['登记设备', 'Enrol device'],
  'devices.test': ['测试', 'Test'],
  'devices.remove': ['移除', 'Remove'],
  'devices.discover': ['搜索设备', 'Discover devices'],
  'devices.discoverProtocol': ['搜索协议', 'Discover'],
  'devices.discoverTarget': ['地址（可选）', 'Address (optional)'],
  'devices.useFound': ['填入登记表', 'Use in enrol form'],
  'devices.already': ['已登记', 'already enrolled'],
  'devices.import': ['批量导入', 'Bulk import'],
  'devices.importHint': ['CSV，第一行为表头：id,profile,url,name,building,room（MQTT 设备另加 password）', 'CSV with a header line: id,profile,url,name,building,room (MQTT devices add password)'],
  'devices.address': ['地址', 'Address'],
  'devices.none': ['没有设备', 'No devices'],
  'devices.sent': ['已发送到网关', 'Sent to the gateway'],
  'state.online': ['在线', 'Online'],
  'state.degraded': ['异常', 'Degraded'],
  'state.offline': ['离线', 'Offline'],
  'state.unknown': ['未知', 'Unknown'],
  'rules.title': ['规则', 'Rules'],
  'rules.params': ['阈值参数', 'Thresholds'],
  'rules.overrides': ['范围覆盖', 'Scope overrides'],
  'rules.backtest': ['回测', 'Backtest'],
  'rules.param': ['参数', 'Parameter'],
  'rules.from': ['从', 'From'],
  'rules.to': ['到', 'To'],
  'rules.steps': ['步长', 'Step'],
  'rules.run': ['运行回测', 'Run backtest'],
  'rules.alerts': ['告警数', 'Alerts'],
  'rules.period': ['回测时段（天）', 'Period (days)'],
  'rules.save': ['保存', 'Save'],
  'rules.note': ['修改说明', 'Change note'],
  'rules.saved': ['已保存', 'Saved'],
  'rules.none': ['规则服务未接入', 'Rules service not connected'],
  'rules.history': ['修改记录', 'Change log'],
  'rules.scope': ['范围', 'Scope'],
  'overview.title': ['区域概览', 'Regional overview'],
  'overview.region': ['区域', 'Region'],
  'overview.openEmergencies': ['未解除应急', 'Open emergencies'],
  'overview.openHazards': ['未解除隐患', 'Open hazards'],
  'overview.devicesOnline': ['设备在线', 'Devices online'],
  'overview.trend': ['近 30 天告警趋势', 'Alerts, last 30 days'],
  'overview.export': ['导出事故统计 CSV', 'Export accident statistics (CSV)'],
  'overview.up': ['上一级', 'Up one level'],
  'overview.none': ['暂无数据', 'No data'],
  'error.network': ['网络错误，请重试', 'Network error; please retry'],
  'sound.on': ['声音已开启', 'Sound on'],
};

let lang = localStorage.getItem('xiaoan.lang') === 'en' ? 'en' : 'zh';

export function getLang() {
  return lang;
}
export function setLang(l) {
  lang = l === 'en' ? 'en' : 'zh';
  localStorage.setItem('xiaoan.lang', lang);
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
}
export function t(key) {
  const e = TEXT[key];
  if (!e) return key;
  return lang === 'zh' ? e[0] : e[1];
}
/** A {zh, en} object from the server, in the chosen language. */
export function loc(obj) {
  if (!obj) return '';
  if (typeof obj === 'string') return obj;
  return (lang === 'zh' ? obj.zh : obj.en) || obj.zh || obj.en || '';
}
export function applyStatic(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}
const fmtCache = {};
/** Date and time in Asia/Shanghai. */
export function fmtTime(ms) {
  if (ms === null || ms === undefined || ms === '') return '—';
  const d = typeof ms === 'number' ? new Date(ms) : new Date(ms);
  if (Number.isNaN(d.getTime())) return '—';
  const key = lang;
  fmtCache[key] ??= new Intl.DateTimeFormat(lang === 'zh' ? 'zh-CN' : 'en-GB', {
    timeZone: 'Asia/Shanghai', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });
  return fmtCache[key].format(d);
}
