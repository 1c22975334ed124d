// Parses an iCalendar file with ical.js (node icalparse.cjs <ical.js dir> <file>)
// and prints its events as JSON: the real-parser check of oncall's feeds.
const lib = require(process.argv[2]);
const ICAL = lib.default || lib;
const fs = require('fs');
const comp = new ICAL.Component(ICAL.parse(fs.readFileSync(process.argv[3], 'utf8')));
const events = comp.getAllSubcomponents('vevent').map((v) => {
  const e = new ICAL.Event(v);
  return {
    uid: e.uid,
    summary: e.summary,
    start: e.startDate.toJSDate().toISOString(),
    end: e.endDate.toJSDate().toISOString(),
    stamp: v.getFirstPropertyValue('dtstamp').toJSDate().toISOString(),
  };
});
console.log(JSON.stringify({ name: comp.getFirstPropertyValue('x-wr-calname'), events }));
